//! SMS through a GSM/LTE modem on a serial port, in text mode (3GPP TS 27.005):
//! `AT`, `ATE0`, `AT+CPIN?` (PIN when asked), `AT+CMGF=1`, then per message
//! `AT+CMGS="+1NNNNNNNNNN"`, the `> ` prompt, the text and Ctrl-Z, `+CMGS: n` and `OK`.
//!
//! One worker task owns the port and sends one message at a time from a queue, so two logins
//! never interleave their dialogues. After an I/O error (a USB modem re-enumerating) the port is
//! reopened; after a refusal or a timeout the modem is set up again before the next message.
//! Text outside a small alphabet that reads the same in the modem's GSM and IRA character sets
//! goes as UCS2 (`AT+CSCS="UCS2"`, hex) so accents and emoji arrive intact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use super::{render, OtpMessage, OtpSender};
use crate::config::ModemConfig;
use crate::drivers::DriverError;

const DRIVER: &str = "otp modem";
const CTRL_Z: u8 = 0x1a;
const ESC: u8 = 0x1b;
/// Messages waiting for the modem; more callers wait for a free place.
const QUEUE: usize = 64;
/// Characters of one single-part SMS in text mode.
const GSM_MAX: usize = 160;
const UCS2_MAX: usize = 70;

/// The handle the server keeps: a queue into the worker that owns the port.
pub struct ModemOtp {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    to: String,
    text: String,
    reply: oneshot::Sender<Result<(), DriverError>>,
}

/// Everything that can be said about the config without touching the port.
pub(super) fn check(config: &ModemConfig, template: &str) -> Result<(), DriverError> {
    let bad = |why: String| Err(DriverError::config(DRIVER, why));
    // The PIN's form, the baud rate and the timeout were checked at config load.
    let device = match config.device_path() {
        Ok(device) => device,
        Err(why) => return bad(why),
    };
    let sample = render(template, "000000");
    let (length, max) = if gsm_safe(&sample) {
        (sample.len(), GSM_MAX)
    } else {
        (sample.encode_utf16().count(), UCS2_MAX)
    };
    if length > max {
        return bad(format!(
            "`otp.message` makes a {length}-character SMS; one text-mode SMS holds {GSM_MAX} plain \
             characters, or {UCS2_MAX} when it has accents, emoji or symbols such as @ $ _"
        ));
    }
    if let Err(e) = std::fs::metadata(device) {
        return bad(format!(
            "cannot use `otp.modem.device` {}: {e}",
            device.display()
        ));
    }
    Ok(())
}

impl ModemOtp {
    /// Check the config, open the port (a missing device stops the server at start) and start
    /// the worker, which sets the modem up at once so SIM problems show in the log early.
    pub fn open(config: &ModemConfig, template: &str) -> Result<ModemOtp, DriverError> {
        check(config, template)?;
        let device = config
            .device_path()
            .map_err(|why| DriverError::config(DRIVER, why))?
            .to_path_buf();
        let port =
            open_port(&device, config.baud).map_err(|why| DriverError::config(DRIVER, why))?;
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let mut modem = Modem::new(config.clone(), device, port);
        tokio::spawn(async move {
            match modem.prepare().await {
                Ok(()) => log::info!("modem on {} is ready to send SMS", modem.device.display()),
                Err(f) => {
                    modem.recover(&f, false).await;
                    log::warn!(
                        "modem on {} is not ready: {f}; trying again with the first message",
                        modem.device.display()
                    );
                }
            }
            while let Some(job) = queue.recv().await {
                let result = modem.deliver(&job.to, &job.text).await;
                let _ = job.reply.send(result);
            }
        });
        Ok(ModemOtp { jobs })
    }
}

#[async_trait]
impl OtpSender for ModemOtp {
    async fn send(&self, message: &OtpMessage) -> Result<(), DriverError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            to: message.e164.clone(),
            text: message.text.clone(),
            reply,
        };
        let gone = || DriverError::delivery(DRIVER, "the modem worker has stopped");
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn open_port(device: &Path, baud: u32) -> Result<SerialStream, String> {
    tokio_serial::new(device.to_string_lossy(), baud)
        .open_native_async()
        .map_err(|e| format!("cannot open {}: {e}", device.display()))
}

/// Why one step of the dialogue failed.
#[derive(Debug)]
enum Failure {
    /// The port broke (or could not be reopened): reopen before the next try.
    Io(String),
    /// No complete answer in time.
    Timeout(String),
    /// `ERROR`, `+CMS ERROR: n`, `+CME ERROR: n`, or a SIM state we cannot fix.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(why) => write!(f, "serial port error: {why}"),
            Failure::Timeout(why) | Failure::Refused(why) => f.write_str(why),
        }
    }
}

/// How the modem answered a line.
enum Final {
    Ok,
    Error(String),
}

fn final_result(line: &str) -> Option<Final> {
    if line == "OK" {
        Some(Final::Ok)
    } else if line == "ERROR" || line.starts_with("+CMS ERROR") || line.starts_with("+CME ERROR") {
        Some(Final::Error(line.to_string()))
    } else {
        None
    }
}

struct Modem {
    config: ModemConfig,
    /// `config.device`, which `open` required.
    device: PathBuf,
    port: Option<SerialStream>,
    /// Echo off, SIM unlocked, text mode set.
    ready: bool,
    /// A dialogue broke off, perhaps mid-UCS2: set the GSM character set again when preparing.
    reset_charset: bool,
    /// The SIM refused the configured PIN once; trying again would count towards the PUK lock.
    pin_rejected: bool,
    /// Bytes read but not yet consumed as lines.
    buf: Vec<u8>,
}

impl Modem {
    fn new(config: ModemConfig, device: PathBuf, port: SerialStream) -> Modem {
        Modem {
            config,
            device,
            port: Some(port),
            ready: false,
            reset_charset: false,
            pin_rejected: false,
            buf: Vec::new(),
        }
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Send one SMS; an I/O error before the text was handed over reopens the port and tries once more.
    async fn deliver(&mut self, to: &str, text: &str) -> Result<(), DriverError> {
        let mut reopened = false;
        loop {
            let mut submitted = false;
            match self.try_deliver(to, text, &mut submitted).await {
                Ok(reference) => {
                    log::info!("SMS to {to} sent by the modem (message reference {reference})");
                    return Ok(());
                }
                Err(failure) => {
                    self.recover(&failure, submitted).await;
                    if matches!(failure, Failure::Io(_)) && !submitted && !reopened {
                        log::warn!("modem: {failure}; reopening {}", self.device.display());
                        reopened = true;
                        continue;
                    }
                    return Err(DriverError::delivery(DRIVER, failure.to_string()));
                }
            }
        }
    }

    /// Returns the message reference of `+CMGS: n`.
    async fn try_deliver(
        &mut self,
        to: &str,
        text: &str,
        submitted: &mut bool,
    ) -> Result<String, Failure> {
        if self.port.is_none() {
            self.port = Some(open_port(&self.device, self.config.baud).map_err(Failure::Io)?);
        }
        self.prepare().await?;
        if gsm_safe(text) {
            return self.submit(to, text.as_bytes(), submitted).await;
        }
        self.command("AT+CSCS=\"UCS2\"").await?;
        self.command("AT+CSMP=17,167,0,8").await?;
        let reference = self
            .submit(&ucs2_hex(to), ucs2_hex(text).as_bytes(), submitted)
            .await?;
        // Back to plain text at once, so a restart never finds the modem in UCS2.
        if let Err(f) = self.gsm_charset().await {
            log::warn!("modem: could not switch back from UCS2: {f}");
            self.recover(&f, true).await;
        }
        Ok(reference)
    }

    /// Echo off, SIM unlocked, text mode: once after opening and after any failure.
    async fn prepare(&mut self) -> Result<(), Failure> {
        if self.ready {
            return Ok(());
        }
        self.command("AT").await?;
        self.command("ATE0").await?;
        let info = self.command("AT+CPIN?").await?;
        let state = info
            .iter()
            .find_map(|l| l.strip_prefix("+CPIN:"))
            .map(str::trim)
            .unwrap_or("")
            .to_string();
        match state.as_str() {
            "READY" => {}
            "SIM PIN" => self.enter_pin().await?,
            other => {
                return Err(Failure::Refused(format!(
                    "the SIM is not ready (+CPIN: {other})"
                )))
            }
        }
        self.command("AT+CMGF=1").await?;
        if self.reset_charset {
            self.gsm_charset().await?;
            self.reset_charset = false;
        }
        self.ready = true;
        Ok(())
    }

    async fn enter_pin(&mut self) -> Result<(), Failure> {
        let Some(pin) = &self.config.pin else {
            return Err(Failure::Refused(
                "the SIM asks for a PIN; set `otp.modem.pin`".into(),
            ));
        };
        if self.pin_rejected {
            return Err(Failure::Refused(
                "the SIM refused `otp.modem.pin` before; not trying it again (three wrong PINs \
                 lock the SIM): correct the PIN and restart"
                    .into(),
            ));
        }
        let command = format!("AT+CPIN=\"{}\"", pin.as_str());
        match self.command(&command).await {
            Err(Failure::Refused(why)) => {
                self.pin_rejected = true;
                Err(Failure::Refused(format!(
                    "the SIM refused `otp.modem.pin` ({why})"
                )))
            }
            other => other.map(drop),
        }
    }

    async fn gsm_charset(&mut self) -> Result<(), Failure> {
        self.command("AT+CSCS=\"GSM\"").await?;
        self.command("AT+CSMP=17,167,0,0").await?;
        Ok(())
    }

    /// `AT+CMGS`, prompt, text, Ctrl-Z, `+CMGS: n`, `OK`.
    async fn submit(
        &mut self,
        address: &str,
        payload: &[u8],
        submitted: &mut bool,
    ) -> Result<String, Failure> {
        let command = format!("AT+CMGS=\"{address}\"");
        self.send_line(&command).await?;
        self.wait_for_prompt(&command).await?;
        let mut bytes = payload.to_vec();
        bytes.push(CTRL_Z);
        self.write(&bytes).await?;
        *submitted = true;
        let info = self.wait_for_final("the message").await?;
        Ok(info
            .iter()
            .find_map(|l| l.strip_prefix("+CMGS:"))
            .map(|r| r.trim().to_string())
            .unwrap_or_else(|| "?".into()))
    }

    /// After a failure: forget a broken port, set the modem up again next time, and leave the
    /// text prompt with ESC if the modem may still be waiting for a message body.
    async fn recover(&mut self, failure: &Failure, submitted: bool) {
        self.ready = false;
        self.reset_charset = true;
        match failure {
            Failure::Io(_) => {
                self.port = None;
                self.buf.clear();
            }
            Failure::Timeout(_) if !submitted => {
                let _ = self.write(&[ESC]).await;
            }
            _ => {}
        }
    }

    /// One command: its information lines up to `OK`; a refusal or timeout is an error.
    async fn command(&mut self, command: &str) -> Result<Vec<String>, Failure> {
        self.send_line(command).await?;
        self.wait_for_final(command).await
    }

    async fn send_line(&mut self, command: &str) -> Result<(), Failure> {
        // A late answer to an earlier, timed-out command must not pass for this one's.
        self.buf.clear();
        if let Some(port) = &self.port {
            let _ = port.clear(tokio_serial::ClearBuffer::Input);
        }
        log::debug!("modem <- {}", self.masked(command));
        let mut line = command.as_bytes().to_vec();
        line.push(b'\r');
        self.write(&line).await
    }

    fn masked(&self, command: &str) -> String {
        match &self.config.pin {
            Some(pin) => command.replace(pin.as_str(), "****"),
            None => command.to_string(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let timeout = self.timeout();
        let port = self
            .port
            .as_mut()
            .ok_or_else(|| Failure::Io("the port is closed".into()))?;
        let write = async {
            port.write_all(bytes).await?;
            port.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Io(e.to_string())),
            Err(_) => Err(Failure::Timeout(format!(
                "the modem took no data for {} s",
                timeout.as_secs()
            ))),
        }
    }

    /// Lines up to the final result of `what` (a command's echo is skipped).
    async fn wait_for_final(&mut self, what: &str) -> Result<Vec<String>, Failure> {
        let deadline = Instant::now() + self.timeout();
        let mut info = Vec::new();
        loop {
            while let Some(line) = self.next_line() {
                log::debug!("modem -> {}", self.masked(&line));
                match final_result(&line) {
                    Some(Final::Ok) => return Ok(info),
                    Some(Final::Error(e)) => {
                        return Err(Failure::Refused(format!(
                            "the modem answered {e} to {}",
                            self.masked(what)
                        )))
                    }
                    None if line == what => {}
                    None => info.push(line),
                }
            }
            self.read_more(deadline, what).await?;
        }
    }

    /// Wait for `> ` after `AT+CMGS`; unsolicited lines are skipped, errors end the wait.
    async fn wait_for_prompt(&mut self, what: &str) -> Result<(), Failure> {
        let deadline = Instant::now() + self.timeout();
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(self.buf.len());
            if self.buf.get(start) == Some(&b'>') {
                let mut end = start + 1;
                if self.buf.get(end) == Some(&b' ') {
                    end += 1;
                }
                self.buf.drain(..end);
                return Ok(());
            }
            if let Some(line) = self.next_line() {
                log::debug!("modem -> {line}");
                if let Some(Final::Error(e)) = final_result(&line) {
                    return Err(Failure::Refused(format!(
                        "the modem answered {e} to {what}"
                    )));
                }
                continue;
            }
            self.read_more(deadline, what).await?;
        }
    }

    /// The next complete, non-empty line (without its `\r`/`\n`).
    fn next_line(&mut self) -> Option<String> {
        loop {
            let end = self.buf.iter().position(|b| matches!(b, b'\r' | b'\n'))?;
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]).trim().to_string();
            if !text.is_empty() {
                return Some(text);
            }
        }
    }

    async fn read_more(&mut self, deadline: Instant, what: &str) -> Result<(), Failure> {
        let timeout = self.timeout().as_secs();
        let port = self
            .port
            .as_mut()
            .ok_or_else(|| Failure::Io("the port is closed".into()))?;
        let mut chunk = [0u8; 512];
        match tokio::time::timeout_at(deadline, port.read(&mut chunk)).await {
            Err(_) => Err(Failure::Timeout(format!(
                "the modem did not answer {} within {timeout} s",
                self.masked(what)
            ))),
            Ok(Err(e)) => Err(Failure::Io(e.to_string())),
            Ok(Ok(0)) => Err(Failure::Io("the port was closed (modem unplugged?)".into())),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}

/// Text that reads the same whether the modem's character set is GSM 7-bit or IRA (ASCII):
/// letters, digits, space and the punctuation both put at the same code. `@ $ _`, brackets,
/// control characters and everything beyond ASCII go as UCS2 instead.
pub fn gsm_safe(text: &str) -> bool {
    text.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b' ' | b'!'
                    | b'"'
                    | b'#'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'-'
                    | b'.'
                    | b'/'
                    | b':'
                    | b';'
                    | b'<'
                    | b'='
                    | b'>'
                    | b'?'
            )
    })
}

/// UCS2 as `AT+CSCS="UCS2"` wants it: four upper-case hex digits per UTF-16 unit.
pub fn ucs2_hex(text: &str) -> String {
    text.encode_utf16().map(|u| format!("{u:04X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_stays_gsm_and_the_rest_goes_ucs2() {
        assert!(gsm_safe("Your Hangin code is 123456"));
        assert!(gsm_safe("Code: 123456. Don't share it!"));
        for text in [
            "Dein Code für Hangin",
            "mail@example",
            "5 $",
            "a_b",
            "[x]",
            "line\nbreak",
            "🎉",
        ] {
            assert!(!gsm_safe(text), "{text}");
        }
    }

    #[test]
    fn ucs2_is_hex_utf16() {
        assert_eq!(ucs2_hex("+1"), "002B0031");
        assert_eq!(ucs2_hex("ü"), "00FC");
        assert_eq!(ucs2_hex("🎉"), "D83CDF89");
    }

    #[test]
    fn templates_that_do_not_fit_one_sms_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("tty");
        std::fs::write(&device, b"").unwrap();
        let config = ModemConfig {
            device: Some(device),
            ..ModemConfig::default()
        };
        assert!(check(&config, "Your Hangin code is {code}").is_ok());
        let long = format!("{} {{code}}", "x".repeat(160));
        assert!(check(&config, &long).is_err());
        let accents = format!("{} {{code}}", "é".repeat(64));
        assert!(check(&config, &accents).is_err());
        let missing = ModemConfig {
            device: Some("/dev/no-such-modem".into()),
            ..ModemConfig::default()
        };
        let e = check(&missing, "{code}").unwrap_err().to_string();
        assert!(e.contains("/dev/no-such-modem"), "{e}");
    }
}
