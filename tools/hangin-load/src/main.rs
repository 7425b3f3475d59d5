use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hangin_load::report::Report;
use hangin_load::scenarios::{self, Ctx};
use hangin_load::{progress, raise_nofile};

/// Load generator for hangin. Starts the server binary itself unless --url is given.
#[derive(Debug, Parser)]
#[command(name = "hangin-load", version)]
struct Cli {
    /// The hangin binary (default: `hangin` next to this executable).
    #[arg(long, global = true)]
    bin: Option<PathBuf>,
    /// Use a running server (e.g. http://127.0.0.1:3000) instead of starting one.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Data directory: the running server's (with --url), or where to keep a started server's
    /// database (default: a temporary directory, removed afterwards).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The running server's pid (with --url), for memory and CPU figures.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// The running server's log file (with --url), where the log OTP driver writes codes.
    #[arg(long, global = true)]
    otp_log: Option<PathBuf>,
    /// Pin a started server to these CPUs, e.g. `0` (the load tool keeps whatever is left).
    #[arg(long, global = true, value_delimiter = ',')]
    server_cpus: Vec<usize>,
    /// Source addresses for client connections, round-robin (beyond ~28,000 connections).
    #[arg(long, global = true, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// Connections being set up at once.
    #[arg(long, global = true, default_value_t = 200)]
    connect_concurrency: usize,
    /// Phone numbers of minted users start here.
    #[arg(long, global = true, default_value_t = 5_550_000_000)]
    first_number: u64,
    /// Print the report(s) as JSON on stdout (progress stays on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Hold N subscribed connections; server RSS before and after.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Users per group of mutual contacts.
        #[arg(long, default_value_t = 10)]
        group: usize,
        /// Only ChatsChannel, no chat per group.
        #[arg(long)]
        no_chat: bool,
        /// Seconds to hold the connections.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
    },
    /// One speaker, M subscribers of one chat; per-delivery latency.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Messages per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 100)]
        messages: u64,
        /// Messages sent first and not measured.
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        /// Bytes of padding in each message body.
        #[arg(long, default_value_t = 100)]
        padding: usize,
    },
    /// K chats speaking at once; durable messages per second and latency.
    Storm {
        #[arg(long, default_value_t = 100)]
        chats: usize,
        /// Speakers per chat.
        #[arg(long, default_value_t = 2)]
        speakers: usize,
        /// Listening members per chat.
        #[arg(long, default_value_t = 2)]
        listeners: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Messages each speaker keeps in flight (1 = send, wait for its own echo, send again).
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long, default_value_t = 50)]
        padding: usize,
    },
    /// OTP login: POST /create, then the password grant (argon2 verify + token issue).
    Login {
        #[arg(long, default_value_t = 2000)]
        logins: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Start → READY=1 on an existing database, and idle RSS, over several starts.
    Ready {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Users to mint when the database is new.
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Seconds after READY before reading RSS.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// Every target of the issue, one after the other, on this machine.
    All,
    /// Abuse and soak scenarios of issue 12 (src/abuse.rs).
    #[command(flatten)]
    Abuse(hangin_load::abuse::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let nofile = raise_nofile();
    let bin = cli.bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("hangin")))
            .unwrap_or_else(|| PathBuf::from("hangin"))
    });
    if cli.url.is_none() && !bin.exists() {
        eprintln!(
            "hangin-load: no server binary at {} (build it, or pass --bin)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let ctx = Ctx {
        bin,
        url: cli.url.clone(),
        data_dir: cli.data_dir.clone(),
        pid: cli.pid,
        otp_log: cli.otp_log.clone(),
        server_cpus: cli.server_cpus.clone(),
        sources: cli.sources.clone(),
        connect_concurrency: cli.connect_concurrency,
        first_number: cli.first_number,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    progress!(
        "hangin-load: {} cpus, open-file limit {nofile}, loadavg {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        hangin_load::server::loadavg()
    );
    let result = runtime.block_on(run(&ctx, cli.scenario));
    match result {
        Ok(reports) => {
            if cli.json {
                let v = if reports.len() == 1 {
                    serde_json::to_string_pretty(&reports[0])
                } else {
                    serde_json::to_string_pretty(&reports)
                };
                println!("{}", v.expect("reports serialize"));
            } else {
                for r in &reports {
                    print!("{}", r.render());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hangin-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(ctx: &Ctx, scenario: Scenario) -> anyhow::Result<Vec<Report>> {
    Ok(match scenario {
        Scenario::Idle {
            conns,
            group,
            no_chat,
            hold,
        } => vec![
            scenarios::idle(
                ctx,
                &scenarios::IdleArgs {
                    conns,
                    group,
                    chat: !no_chat,
                    hold: Duration::from_secs_f64(hold),
                },
            )
            .await?,
        ],
        Scenario::Fanout {
            subscribers,
            rate,
            messages,
            warmup,
            padding,
        } => vec![
            scenarios::fanout(
                ctx,
                &scenarios::FanoutArgs {
                    subscribers,
                    rate,
                    messages,
                    warmup,
                    padding,
                },
            )
            .await?,
        ],
        Scenario::Storm {
            chats,
            speakers,
            listeners,
            duration,
            window,
            padding,
        } => vec![
            scenarios::storm(
                ctx,
                &scenarios::StormArgs {
                    chats,
                    speakers,
                    listeners,
                    duration: Duration::from_secs_f64(duration),
                    window,
                    padding,
                },
            )
            .await?,
        ],
        Scenario::Login {
            logins,
            concurrency,
        } => vec![
            scenarios::login(
                ctx,
                &scenarios::LoginArgs {
                    logins,
                    concurrency,
                },
            )
            .await?,
        ],
        Scenario::Ready {
            runs,
            users,
            settle,
        } => vec![
            scenarios::ready(
                ctx,
                &scenarios::ReadyArgs {
                    runs,
                    users,
                    settle: Duration::from_secs_f64(settle),
                },
            )
            .await?,
        ],
        Scenario::All => scenarios::all(ctx).await?,
        Scenario::Abuse(command) => vec![command.run(ctx).await?],
    })
}
