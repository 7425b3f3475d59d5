//! `image/hangin-image` against small synthetic Raspberry Pi OS-like disk images the tests build
//! themselves (MBR, FAT boot partition + ext4 root with merged /usr, no root or mounts needed),
//! read back with debugfs and mtools. Needs e2fsprogs, fdisk, dosfstools, mtools and dpkg-deb.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECTOR: u64 = 512;
const BOOT_START: u64 = 8192;
const BOOT_SECTORS: u64 = 32768; // 16 MiB
const ROOT_START: u64 = BOOT_START + BOOT_SECTORS;
const UNIT_LINK: &str = "/etc/systemd/system/multi-user.target.wants/hangin.service";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool() -> PathBuf {
    repo().join("image/hangin-image")
}

fn require_tools() {
    for (tool, package) in [
        ("sfdisk", "fdisk"),
        ("debugfs", "e2fsprogs"),
        ("mke2fs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("mkfs.fat", "dosfstools"),
        ("mcopy", "mtools"),
        ("dpkg-deb", "dpkg"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: apt-get install e2fsprogs fdisk dosfstools mtools ({package})"
        );
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A disk image shaped like Raspberry Pi OS: partition 1 FAT ("bootfs"), partition 2 ext4 with
/// /lib, /bin, /sbin as symlinks into /usr, a host name, a hosts file and an enabled unit.
fn synthetic_image(parent: &Path, root_mib: u64) -> PathBuf {
    let dir = &parent.join(format!("image-{root_mib}"));
    fs::create_dir_all(dir).unwrap();
    let img = dir.join("pi.img");
    let root_sectors = root_mib * 2048;
    let total = (ROOT_START + root_sectors) * SECTOR;
    fs::File::create(&img).unwrap().set_len(total).unwrap();
    let layout = format!(
        "label: dos\nstart={BOOT_START}, size={BOOT_SECTORS}, type=c\nstart={ROOT_START}, size={root_sectors}, type=83\n"
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", img.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(layout.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");

    run(Command::new("mkfs.fat")
        .args(["-n", "BOOTFS", "--offset", &BOOT_START.to_string()])
        .arg(&img)
        .arg((BOOT_SECTORS / 2).to_string()));
    let cmdline = dir.join("cmdline.txt");
    fs::write(
        &cmdline,
        "console=serial0,115200 root=PARTUUID=0-02 rootwait\n",
    )
    .unwrap();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), BOOT_START * SECTOR))
        .arg(&cmdline)
        .arg("::/cmdline.txt"));

    let tree = dir.join("rootfs");
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib/systemd/system",
        "etc/systemd/system/multi-user.target.wants",
        "var/lib",
    ] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    for top in ["lib", "bin", "sbin"] {
        std::os::unix::fs::symlink(format!("usr/{top}"), tree.join(top)).unwrap();
    }
    fs::write(tree.join("etc/hostname"), "raspberrypi\n").unwrap();
    fs::write(
        tree.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\t\traspberrypi\n",
    )
    .unwrap();
    fs::write(
        tree.join("usr/lib/systemd/system/ssh.service"),
        "[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/ssh.service",
        tree.join("etc/systemd/system/multi-user.target.wants/ssh.service"),
    )
    .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "rootfs", "-d"])
        .arg(&tree)
        .arg("-E")
        .arg(format!("offset={}", ROOT_START * SECTOR))
        .arg(&img)
        .arg(format!("{}k", root_mib * 1024)));
    img
}

/// A root partition with room for this build's binary (a debug build: 100+ MiB) twice over.
fn roomy_root_mib() -> u64 {
    let binary = fs::metadata(env!("CARGO_BIN_EXE_hangin")).unwrap().len();
    2 * (binary >> 20) + 64
}

/// The ext4 root partition of `img`, as debugfs names it.
fn root_fs(img: &Path) -> String {
    format!("{}?offset={}", img.display(), ROOT_START * SECTOR)
}

struct Inode {
    kind: String,
    mode: String,
    uid: u32,
    gid: u32,
    link: Option<String>,
}

fn stat(img: &Path, path: &str) -> Option<Inode> {
    let out = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(root_fs(img)));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> Option<String> {
        text.split(name)
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
    };
    let kind = field("Type:")?;
    Some(Inode {
        kind,
        mode: field("Mode:")?,
        uid: field("User:")?.parse().unwrap(),
        gid: field("Group:")?.parse().unwrap(),
        link: text
            .split("Fast link dest: \"")
            .nth(1)
            .map(|rest| rest.split('"').next().unwrap().to_string()),
    })
}

fn read(img: &Path, path: &str) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("dump {path} {}", out.path().display()))
        .arg(root_fs(img)));
    fs::read(out.path()).unwrap()
}

fn boot_file(img: &Path, name: &str) -> Option<Vec<u8>> {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), BOOT_START * SECTOR))
        .arg(format!("::/{name}"))
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

fn assert_file(img: &Path, path: &str, mode: &str, content: &[u8]) {
    let inode = stat(img, path).unwrap_or_else(|| panic!("{path} missing from the image"));
    assert_eq!(inode.kind, "regular", "{path}");
    assert_eq!(inode.mode, mode, "{path} mode");
    assert_eq!((inode.uid, inode.gid), (0, 0), "{path} owner");
    assert!(read(img, path) == content, "{path} content differs");
}

/// The root file system passes a forced read-only e2fsck.
fn assert_fsck_clean(img: &Path) {
    run(Command::new("e2fsck").arg("-fn").arg(root_fs(img)));
}

fn hangin_image(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(tool())
        .args(args)
        .output()
        .expect("run hangin-image")
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn binary_unit_and_first_boot_config_land_in_a_copy() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let stock = synthetic_image(dir.path(), roomy_root_mib());
    let stock_bytes = fs::read(&stock).unwrap();
    let out_img = dir.path().join("hangin.img");
    let config = dir.path().join("hangin.toml");
    let config_text = "listen = \"0.0.0.0:8080\"\ndata_dir = \"/var/lib/hangin\"\nallow_insecure_log_driver = true\n\n[mdns]\ninstance = \"Family chat\"\n";
    fs::write(&config, config_text).unwrap();
    let binary = env!("CARGO_BIN_EXE_hangin");

    let out = hangin_image(&[
        os("--binary"),
        os(binary),
        os("--any-arch"),
        os("--config"),
        config.as_os_str(),
        os("--hostname"),
        os("familychat"),
        os("--ssh"),
        os("--userconf"),
        os("pi:$6$salt$hash"),
        os("-o"),
        out_img.as_os_str(),
        stock.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "hangin-image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The stock image is untouched; the copy has everything.
    assert!(
        fs::read(&stock).unwrap() == stock_bytes,
        "input image changed"
    );
    let img = out_img.as_path();
    assert_file(img, "/usr/bin/hangin", "0755", &fs::read(binary).unwrap());
    assert_file(
        img,
        "/usr/lib/systemd/system/hangin.service",
        "0644",
        &fs::read(repo().join("systemd/hangin.service")).unwrap(),
    );
    assert_file(
        img,
        "/etc/hangin/hangin.toml",
        "0644",
        config_text.as_bytes(),
    );
    let etc_hangin = stat(img, "/etc/hangin").unwrap();
    assert_eq!(
        (etc_hangin.kind.as_str(), etc_hangin.mode.as_str()),
        ("directory", "0755")
    );
    let link = stat(img, UNIT_LINK).expect("enablement symlink");
    assert_eq!(link.kind, "symlink");
    assert_eq!(
        link.link.as_deref(),
        Some("/usr/lib/systemd/system/hangin.service")
    );
    // What was there stays: merged /usr, the other enabled unit.
    assert_eq!(stat(img, "/lib").unwrap().kind, "symlink");
    assert!(stat(
        img,
        "/etc/systemd/system/multi-user.target.wants/ssh.service"
    )
    .is_some());

    assert_file(img, "/etc/hostname", "0644", b"familychat\n");
    let hosts = String::from_utf8(read(img, "/etc/hosts")).unwrap();
    assert!(hosts.contains("\n127.0.1.1\tfamilychat\n"), "{hosts}");
    assert!(!hosts.contains("raspberrypi"), "{hosts}");
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");

    assert_eq!(boot_file(img, "ssh").as_deref(), Some(&b""[..]));
    assert_eq!(
        boot_file(img, "userconf.txt").as_deref(),
        Some(&b"pi:$6$salt$hash\n"[..])
    );
    assert!(boot_file(img, "cmdline.txt").is_some());

    // The config read back is one the server accepts.
    let readback = dir.path().join("readback.toml");
    fs::write(&readback, read(img, "/etc/hangin/hangin.toml")).unwrap();
    let check = Command::new(binary)
        .args(["config", "check", "--config"])
        .arg(&readback)
        .env_remove("HANGIN_CONFIG")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "config check: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    assert_fsck_clean(img);
}

/// The test binary without debug info: release builds ship stripped (`strip = true`), and the
/// debug build's ~170 MB would not fit twice into a small synthetic root partition.
fn stripped_binary(dir: &Path) -> PathBuf {
    let out = dir.join("hangin-stripped");
    run(Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_hangin")));
    out
}

/// A package shaped like cargo-deb's output, but with the unit under the pre-merge /lib path.
fn build_deb(dir: &Path, binary: &Path) -> PathBuf {
    let pkg = dir.join("pkg");
    let files: [(&str, Vec<u8>, u32); 4] = [
        ("usr/bin/hangin", fs::read(binary).unwrap(), 0o755),
        (
            "lib/systemd/system/hangin.service",
            fs::read(repo().join("systemd/hangin.service")).unwrap(),
            0o644,
        ),
        (
            "etc/hangin/hangin.toml",
            fs::read(repo().join("systemd/hangin.toml")).unwrap(),
            0o644,
        ),
        ("usr/share/doc/hangin/copyright", b"MIT\n".to_vec(), 0o644),
    ];
    for (path, content, mode) in files {
        let p = pkg.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: hangin\nVersion: 0.1.0-1\nArchitecture: arm64\nMaintainer: tests <t@example.invalid>\nDescription: test package\n",
    )
    .unwrap();
    let deb = dir.join("hangin_0.1.0-1_arm64.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-b"])
        .arg(&pkg)
        .arg(&deb));
    deb
}

#[test]
fn deb_contents_install_in_place_and_again() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = synthetic_image(dir.path(), 256);
    let binary = stripped_binary(dir.path());
    let deb = build_deb(dir.path(), &binary);

    // Twice: a second run replaces what the first wrote.
    for _ in 0..2 {
        let out = hangin_image(&[
            os("--deb"),
            deb.as_os_str(),
            os("--any-arch"),
            img.as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "hangin-image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_file(&img, "/usr/bin/hangin", "0755", &fs::read(binary).unwrap());
    // /lib/systemd/system in the package lands in /usr/lib (where the image's /lib points).
    assert_eq!(stat(&img, "/lib").unwrap().kind, "symlink");
    assert_file(
        &img,
        "/usr/lib/systemd/system/hangin.service",
        "0644",
        &fs::read(repo().join("systemd/hangin.service")).unwrap(),
    );
    assert_file(
        &img,
        "/etc/hangin/hangin.toml",
        "0644",
        &fs::read(repo().join("systemd/hangin.toml")).unwrap(),
    );
    assert_eq!(
        stat(&img, UNIT_LINK).and_then(|i| i.link).as_deref(),
        Some("/usr/lib/systemd/system/hangin.service")
    );
    assert!(
        stat(&img, "/usr/share/doc/hangin").is_none(),
        "docs are left out"
    );
    // Nothing on the boot partition was asked for.
    assert!(boot_file(&img, "ssh").is_none());
    assert_file(&img, "/etc/hostname", "0644", b"raspberrypi\n");
    assert_fsck_clean(&img);
}

#[test]
fn refuses_clearly_instead_of_writing_a_broken_image() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_hangin");
    let fails_with = |args: &[&std::ffi::OsStr], needle: &str| {
        let out = hangin_image(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "expected failure for {args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };

    // A 4 MiB root cannot take the (debug, >8 MiB) binary: said before anything is written.
    let small = synthetic_image(dir.path(), 4);
    assert!(fs::metadata(binary).unwrap().len() > 8 << 20);
    let small_before = fs::read(&small).unwrap();
    fails_with(
        &[
            os("--binary"),
            os(binary),
            os("--any-arch"),
            small.as_os_str(),
        ],
        "KiB free",
    );
    assert!(
        fs::read(&small).unwrap() == small_before,
        "refused, yet written"
    );
    // This machine's binary is not ARM.
    let img = synthetic_image(dir.path(), 64);
    fails_with(
        &[os("--binary"), os(binary), img.as_os_str()],
        "not built for ARM",
    );
    // A file with no partition table.
    let blank = dir.path().join("blank.img");
    fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    fails_with(
        &[
            os("--binary"),
            os(binary),
            os("--any-arch"),
            blank.as_os_str(),
        ],
        "partition table",
    );
    fails_with(
        &[
            os("--binary"),
            os(binary),
            img.as_os_str(),
            os("--hostname"),
            os("bad_name"),
        ],
        "bad host name",
    );
    fails_with(&[img.as_os_str()], "--deb FILE or --binary FILE");
}
