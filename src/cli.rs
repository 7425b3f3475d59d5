//! The command line (edge.md "Command line").

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hangin", version, about = "Self-hosted Hangin chat server")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Config file (default: $HANGIN_CONFIG, else ./hangin.toml when present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite file, pictures, generated credentials).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Plain HTTP + websocket listen address, e.g. 0.0.0.0:3000 ("" turns it off).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage OAuth clients (the apps that may log users in).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Copy the database to PATH with SQLite's online backup (safe while the server runs).
    Backup { path: PathBuf },
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// OTP driver tools.
    #[command(subcommand)]
    Otp(OtpCommand),
    /// Manage people: list, show, ban, unban, sign out, delete (acts on the running server at once).
    #[command(subcommand)]
    User(UserCommand),
    /// Show the server's state: version, uptime, connections, online users, chats, drivers.
    /// Exits 3 when no server is running (the database figures are still shown).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Replace the database with a backup made by `hangin backup` (the server must be stopped).
    /// The current database is kept aside as hangin.sqlite3.before-restore-<time>.
    Restore {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Load tests only: mint users with address books and tokens into the database.
    #[command(hide = true)]
    LoadtestUsers(LoadtestUsersArgs),
}

#[derive(Debug, Args)]
pub struct LoadtestUsersArgs {
    /// How many users.
    #[arg(long)]
    pub count: usize,
    /// Users per group; who knows whom is decided inside a group.
    #[arg(long, default_value_t = 10)]
    pub group: usize,
    /// The first user of each group knows the others, they know only the first (else: everyone
    /// in a group knows everyone).
    #[arg(long)]
    pub star: bool,
    /// Numbers are FIRST_NUMBER, FIRST_NUMBER+1, …
    #[arg(long, default_value_t = 5_550_000_000)]
    pub first_number: u64,
    #[arg(long, default_value_t = 86_400)]
    pub token_ttl_seconds: i64,
    /// Write the users and their tokens here as JSON (mode 0600); "-" for stdout.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client and print its id and secret (the secret is shown only now).
    Create {
        name: String,
        /// Print {"name","client_id","client_secret"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a client (by client id or name); its tokens go with it.
    Delete { client: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets masked.
    Check,
    /// Print a commented configuration file with every key at its built-in default.
    Example {
        /// The file the package installs as /etc/hangin/hangin.toml instead.
        #[arg(long)]
        package: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OtpCommand {
    /// Send a test message through the configured OTP driver.
    Send { number: String },
}

/// USER is a phone number (as the app sends it) or a user's uuid.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List every user.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one user with their counts (address book, contacts, chats, messages).
    Show {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Ban a number (also one that never logged in): no new login codes, every token revoked,
    /// live connections closed, contacts see them go offline.
    Ban {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Lift a ban.
    Unban {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Sign a user out everywhere: tokens revoked, device forgotten, connections closed.
    Signout {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a user and their data (address book, picture, tokens, device, memberships and
    /// the messages they wrote; see docs/administration.md).
    Delete {
        user: String,
        #[arg(long)]
        json: bool,
    },
}
