// Every system call goes through a safe wrapper; Cargo.toml [lints].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use hangin::cli::{Cli, ClientCommand, Command, ConfigCommand, LoadtestUsersArgs, OtpCommand};
use hangin::config::{self, Config, Sources};
use hangin::{auth, db, drivers};

/// Exit code for configuration problems (and nothing else), as the operator docs promise.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Every file any command writes (database, backups, credentials) is the owner's alone.
    hangin::db::health::private_umask();
    let cli = Cli::parse();
    // The example is the defaults: it must print even where the present configuration is bad.
    if let Some(Command::Config(ConfigCommand::Example { package })) = &cli.command {
        print_example(*package);
        return ExitCode::SUCCESS;
    }
    let sources = Sources {
        file_required: cli.global.config.is_some(),
        file: Some(
            cli.global
                .config
                .clone()
                .unwrap_or_else(config::default_config_path),
        ),
        listen: cli.global.listen.clone(),
        data_dir: cli.global.data_dir.clone(),
    };
    let (config, warnings) = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hangin: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    hangin::service::init_logging(&config.log_level);
    for w in warnings {
        log::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hangin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config));
    match result {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("hangin: {e:#}");
            // A driver that cannot be built is a configuration problem, like a bad key.
            match e.downcast_ref::<drivers::DriverError>() {
                Some(drivers::DriverError::Config { .. }) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn print_example(package: bool) {
    let which = if package {
        config::Example::Package
    } else {
        config::Example::Defaults
    };
    print!("{}", config::example(which));
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            hangin::server::serve(config).await?;
        }
        Command::Migrate => {
            std::fs::create_dir_all(&config.data_dir)?;
            let path = config.db_path();
            let ran = db::migrate(&path)?;
            let (applied, latest) = db::migration_status(&path)?;
            println!(
                "{}: {ran} migration(s) applied; schema version {applied} of {latest}",
                path.display()
            );
        }
        Command::Client(cmd) => client(cmd, &config).await?,
        Command::User(cmd) => return hangin::admin::cli::user(cmd, config).await,
        Command::Status { json } => return hangin::admin::cli::status(json, config).await,
        Command::Restore { path, json } => {
            return hangin::admin::cli::restore(path, json, config).await
        }
        Command::LoadtestUsers(args) => loadtest_users(args, &config).await?,
        Command::Backup { path } => {
            let src = config.db_path();
            if !src.exists() {
                anyhow::bail!("no database at {}", src.display());
            }
            let started = std::time::Instant::now();
            db::backup(&src, &path)?;
            println!(
                "backed up {} to {} in {:.1} s",
                src.display(),
                path.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Config(ConfigCommand::Example { package }) => print_example(package),
        Command::Config(ConfigCommand::Check) => {
            hangin::server::check_insecure_log_driver(&config)?;
            drivers::otp::check(&config)?;
            drivers::push::from_config(&config)?;
            // PEM files must load now; a self-signed pair is created by `serve`, not by a check.
            if config.tls.listen.is_some() && !config.tls.self_signed {
                let identity = hangin::tls::load(&config.tls, &config.data_dir)?;
                eprintln!("TLS certificate SHA-256 {}", identity.fingerprint);
            }
            print!("{}", config.masked_toml());
            eprintln!("configuration OK");
        }
        Command::Otp(OtpCommand::Send { number }) => {
            let numbers = hangin::people::numbers::Numbers::new(
                &config.numbers.default_region,
                &config.numbers.allowed_regions,
            )
            .map_err(anyhow::Error::msg)?;
            let Some(e164) = numbers.parse(&number) else {
                anyhow::bail!("{number:?} is not a phone number under [numbers] default_region");
            };
            let number = numbers.display(&e164);
            let sender = drivers::otp::from_config(&config)?;
            let code = auth::otp::generate_code();
            let message = drivers::otp::OtpMessage {
                text: drivers::otp::render(&config.otp.message, &code),
                number: number.clone(),
                e164,
                code,
                expires_at: hangin::clock::system_now_ms() / 1000
                    + config.auth.otp_ttl.as_secs() as i64,
            };
            match sender.send(&message).await {
                Ok(()) => println!(
                    "sent a test message to {} via the {:?} driver",
                    number, config.otp.driver
                ),
                Err(e) => {
                    eprintln!("hangin: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn loadtest_users(args: LoadtestUsersArgs, config: &Config) -> anyhow::Result<()> {
    use hangin::loadtest::{MintSpec, Topology};
    let spec = MintSpec {
        count: args.count,
        group: args.group,
        topology: if args.star {
            Topology::Star
        } else {
            Topology::Clique
        },
        first_number: args.first_number,
        token_ttl_seconds: args.token_ttl_seconds,
    };
    spec.check()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let store = db::Db::open(&config.db_path())?;
    let minted = store
        .write(move |c| hangin::loadtest::mint(c, &spec))
        .await??;
    store.close();
    let text = serde_json::to_string(&minted)?;
    if args.out.as_os_str() == "-" {
        println!("{text}");
    } else {
        hangin::private_file::write(
            &args.out,
            text.as_bytes(),
            hangin::private_file::Existing::Replace,
        )?;
        eprintln!(
            "minted {} users into {}; tokens in {}",
            minted.users.len(),
            config.db_path().display(),
            args.out.display()
        );
    }
    Ok(())
}

async fn client(cmd: ClientCommand, config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = db::Db::open(&config.db_path())?;
    match cmd {
        ClientCommand::Create { name, json } => {
            let created = store
                .write(move |c| auth::clients::create(c, &name))
                .await?;
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!("client_id: {}", created.client_id);
                println!("client_secret: {}", created.client_secret);
            }
        }
        ClientCommand::List { json } => {
            let list = store.read(db::clients::list).await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "client_id": c.uid, "created_at": hangin::wire::iso_ms(c.created_at)}))
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else if list.is_empty() {
                println!("no clients");
            } else {
                for c in list {
                    println!(
                        "{}\t{}\t{}",
                        c.name,
                        c.uid,
                        hangin::wire::iso_ms(c.created_at)
                    );
                }
            }
        }
        ClientCommand::Delete { client } => {
            let gone = store
                .write(move |c| db::clients::delete(c, &client))
                .await?;
            if gone == 0 {
                anyhow::bail!("no client with that id or name");
            }
            println!("deleted {gone} client(s)");
        }
    }
    store.close();
    Ok(())
}
