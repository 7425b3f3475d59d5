use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hangin_load::report::Report;
use hangin_load::scenarios::{self, Ctx};
use hangin_load::{broadcast, joinstorm, lockhog, reconnect};
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
    /// Slow-disk mode: delay each of the started server's fsync/fdatasync calls by N ms (an
    /// LD_PRELOAD shim built with the system `cc`).
    #[arg(long, global = true, default_value_t = 0.0)]
    fsync_delay_ms: f64,
    /// The Pi profile: `--server-cpus 0 --fsync-delay-ms 10` (unless given otherwise) with the
    /// Pi targets.
    #[arg(long, global = true)]
    pi: bool,
    /// Environment for a started server, `KEY=VALUE`, repeatable (e.g.
    /// `--server-env MALLOC_ARENA_MAX=2`); the tool itself does not get it.
    #[arg(long = "server-env", global = true, value_parser = key_value)]
    server_env: Vec<(String, String)>,
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
    /// One account creates chats and mass-subscribes ChatsChannel while unrelated users
    /// subscribe; their subscribe → chats latency.
    Lockhog {
        #[arg(long, default_value_t = 5000)]
        chats: usize,
        /// createChats in flight.
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 20)]
        hog_sockets: usize,
        /// ChatsChannel subscriptions each hog socket holds at once.
        #[arg(long, default_value_t = 50)]
        subs_per_socket: usize,
        /// Unrelated users.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Milliseconds between one unrelated user's subscribes.
        #[arg(long, default_value_t = 200)]
        pause_ms: u64,
        /// Seconds the hog creates chats alone before the measured window.
        #[arg(long, default_value_t = 5.0)]
        precreate: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// N users in live chats; graceful restart; all reconnect at once.
    Reconnect {
        #[arg(long, default_value_t = 5000)]
        users: usize,
        /// Users per group of mutual contacts.
        #[arg(long, default_value_t = 10)]
        group: usize,
        #[arg(long, default_value_t = 1000)]
        chats: usize,
        /// Seconds before giving up on the reconnect.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// M online clients join one chat within a second; RSS per connection, frames per join.
    Joinstorm {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Seconds the joins are spread over.
        #[arg(long, default_value_t = 1.0)]
        spread: f64,
        /// Seconds without frames that count as settled.
        #[arg(long, default_value_t = 1.0)]
        quiet: f64,
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// websocket-shootout: clients in one chat step up until the broadcast p95 exceeds 500 ms.
    Broadcast {
        #[arg(long, default_value_t = 2000)]
        step: usize,
        #[arg(long, default_value_t = 30_000)]
        max_clients: usize,
        /// Broadcasts measured per step.
        #[arg(long, default_value_t = 50)]
        sample: usize,
        /// Broadcasts in flight.
        #[arg(long, default_value_t = 4)]
        concurrent: usize,
        #[arg(long, default_value_t = 200)]
        padding: usize,
        #[arg(long, default_value_t = 500.0)]
        limit_ms: f64,
        /// Seconds after which no new step starts.
        #[arg(long, default_value_t = 300.0)]
        budget: f64,
    },
    /// Every target of the issues, one after the other, on this machine (broadcast aside).
    All,
    /// Abuse and soak scenarios of issue 12 (src/abuse.rs).
    #[command(flatten)]
    Abuse(hangin_load::abuse::Command),
}

/// `KEY=VALUE` of `--server-env`.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
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
    let mut server_cpus = cli.server_cpus.clone();
    let mut fsync_delay_ms = cli.fsync_delay_ms;
    if cli.pi {
        if server_cpus.is_empty() {
            server_cpus = vec![0];
        }
        if fsync_delay_ms <= 0.0 {
            fsync_delay_ms = 10.0;
        }
    }
    if cli.url.is_some()
        && (fsync_delay_ms > 0.0 || !server_cpus.is_empty() || !cli.server_env.is_empty())
    {
        eprintln!("hangin-load: --fsync-delay-ms, --server-cpus, --server-env and --pi apply to a server this tool starts, not to --url");
        return ExitCode::from(2);
    }
    let ctx = Ctx {
        bin,
        url: cli.url.clone(),
        data_dir: cli.data_dir.clone(),
        pid: cli.pid,
        otp_log: cli.otp_log.clone(),
        server_cpus,
        sources: cli.sources.clone(),
        connect_concurrency: cli.connect_concurrency,
        first_number: cli.first_number,
        fsync_delay_ms,
        pi: cli.pi,
        server_env: cli.server_env.clone(),
    };
    if fsync_delay_ms > 0.0 {
        if let Err(e) = hangin_load::slowfs::shim() {
            eprintln!("hangin-load: slow-disk mode: {e:#}");
            return ExitCode::from(2);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    progress!(
        "hangin-load: profile {}, {} cpus, open-file limit {nofile}, loadavg {}",
        ctx.profile(),
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
            eprintln!(
                "hangin-load: done, loadavg {}",
                hangin_load::server::loadavg()
            );
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
        Scenario::Lockhog {
            chats,
            window,
            hog_sockets,
            subs_per_socket,
            users,
            pause_ms,
            precreate,
            duration,
        } => vec![
            lockhog::lockhog(
                ctx,
                &lockhog::LockhogArgs {
                    chats,
                    window,
                    hog_sockets,
                    subs_per_socket,
                    users,
                    pause: Duration::from_millis(pause_ms),
                    precreate: Duration::from_secs_f64(precreate),
                    duration: Duration::from_secs_f64(duration),
                },
            )
            .await?,
        ],
        Scenario::Reconnect {
            users,
            group,
            chats,
            timeout,
        } => vec![
            reconnect::reconnect(
                ctx,
                &reconnect::ReconnectArgs {
                    users,
                    group,
                    chats,
                    timeout: Duration::from_secs_f64(timeout),
                },
            )
            .await?,
        ],
        Scenario::Joinstorm {
            clients,
            spread,
            quiet,
            timeout,
        } => vec![
            joinstorm::joinstorm(
                ctx,
                &joinstorm::JoinstormArgs {
                    clients,
                    spread: Duration::from_secs_f64(spread),
                    quiet: Duration::from_secs_f64(quiet),
                    timeout: Duration::from_secs_f64(timeout),
                },
            )
            .await?,
        ],
        Scenario::Broadcast {
            step,
            max_clients,
            sample,
            concurrent,
            padding,
            limit_ms,
            budget,
        } => vec![
            broadcast::broadcast(
                ctx,
                &broadcast::BroadcastArgs {
                    step,
                    max_clients,
                    sample,
                    concurrent,
                    padding,
                    limit_ms,
                    budget: Duration::from_secs_f64(budget),
                },
            )
            .await?,
        ],
        Scenario::All => scenarios::all(ctx).await?,
        Scenario::Abuse(command) => vec![command.run(ctx).await?],
    })
}
