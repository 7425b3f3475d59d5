use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

use super::{OtpMessage, OtpSender};
use crate::config::ExecConfig;
use crate::drivers::http_client::excerpt;
use crate::drivers::DriverError;

const DRIVER: &str = "otp exec";

/// Runs a program per code, e.g. `["gammu-smsd-inject", "TEXT", "{e164}", "-text", "{message}"]`.
/// No shell: each template element is one argument, whatever characters the values hold. Exit 0
/// is success; anything else, or the timeout, is a delivery failure carrying the program's stderr.
pub struct ExecOtp {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl ExecOtp {
    pub fn from_config(config: &ExecConfig) -> Result<ExecOtp, DriverError> {
        // The argv's presence and the timeout's range were checked at config load.
        let (program, args) = config
            .program()
            .map_err(|why| DriverError::config(DRIVER, why))?;
        let program = find_program(program).map_err(|why| DriverError::config(DRIVER, why))?;
        Ok(ExecOtp {
            program,
            args: args.to_vec(),
            timeout: config.timeout,
        })
    }
}

/// Resolve the program as `execvp` would, so a typo stops the server at start.
fn find_program(name: &str) -> Result<PathBuf, String> {
    let runnable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if runnable(&path) {
            Ok(path)
        } else {
            Err(format!("`otp.exec.argv`: {name} is not an executable file"))
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|p| runnable(p))
        .ok_or_else(|| format!("`otp.exec.argv`: no program {name:?} on PATH"))
}

/// Fill `{number}`, `{e164}`, `{code}` and `{message}` into one argument.
fn fill(template: &str, message: &OtpMessage) -> String {
    template
        .replace("{number}", &message.number)
        .replace("{e164}", &message.e164)
        .replace("{code}", &message.code)
        .replace("{message}", &message.text)
}

#[async_trait]
impl OtpSender for ExecOtp {
    async fn send(&self, message: &OtpMessage) -> Result<(), DriverError> {
        let failed = |why: String| DriverError::delivery(DRIVER, why);
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(self.args.iter().map(|a| fill(a, message)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout also ends what a wrapper script started.
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", self.program.display())))?;
        let pid = child.id();
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => {
                // The whole process group we created above, so no grandchild is left behind.
                if let Some(group) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
                Err(failed(format!(
                    "{} did not finish within {} s",
                    self.program.display(),
                    self.timeout.as_secs()
                )))
            }
            Ok(Err(e)) => Err(failed(format!("{}: {e}", self.program.display()))),
            Ok(Ok(output)) if output.status.success() => Ok(()),
            Ok(Ok(output)) => {
                let stderr = excerpt(&output.stderr);
                Err(failed(format!(
                    "{} {}{}",
                    self.program.display(),
                    output.status,
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    }
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> OtpMessage {
        OtpMessage {
            number: "5550001111".into(),
            e164: "+15550001111".into(),
            code: "123456".into(),
            text: "Your code is 123456; $(reboot)".into(),
            expires_at: 0,
        }
    }

    #[test]
    fn placeholders_fill_whole_arguments() {
        assert_eq!(fill("{e164}", &message()), "+15550001111");
        assert_eq!(
            fill("n={number} c={code}", &message()),
            "n=5550001111 c=123456"
        );
        assert_eq!(
            fill("{message}", &message()),
            "Your code is 123456; $(reboot)"
        );
    }

    #[test]
    fn programs_resolve_on_path_or_fail() {
        assert!(find_program("sh").is_ok());
        assert!(find_program("/bin/sh").is_ok());
        assert!(find_program("no-such-program-hangin").is_err());
        let dir = tempfile::tempdir().unwrap();
        let not_runnable = dir.path().join("script");
        std::fs::write(&not_runnable, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&not_runnable, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(find_program(not_runnable.to_str().unwrap()).is_err());
    }

    #[tokio::test]
    async fn exit_status_and_stderr_become_the_error() {
        let config = ExecConfig {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo \"no signal for $1\" >&2; exit 3".into(),
                "sh".into(),
                "{e164}".into(),
            ],
            timeout: Duration::from_secs(5),
        };
        let e = ExecOtp::from_config(&config)
            .unwrap()
            .send(&message())
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("no signal for +15550001111"), "{text}");
    }
}
