//! Processes and private files of the local target: detached starts with
//! pid files that name one process (pid and start time), stops that signal
//! only those, files 0600 and folders 0700.

use super::*;

pub(super) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub(super) fn mkdir_private(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// A program beside this binary, or on PATH.
pub(super) fn program(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = bin_dir {
        dirs.push(d.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(d) = exe.parent()
    {
        dirs.push(d.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} not found beside provisioner or on PATH (cargo build --workspace --bins)"
            )
        })
}

pub(super) fn on_path(name: &str) -> bool {
    program(name, None).is_ok()
}

/// Start `cmd` detached (own process group, output to `log`), pid in `pid_file`.
pub(super) fn spawn_detached(
    cmd: &mut Command,
    log: &Path,
    pid_file: &Path,
) -> anyhow::Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id();
    // "PID START": a later run signals only this process, not one that got
    // the pid after a reboot.
    let start = start_time(pid).unwrap_or(0);
    write_private(pid_file, format!("{pid} {start}").as_bytes())?;
    Ok(pid)
}

/// Remove the caller's proxy settings (any case: `https_proxy` too), and the
/// variables `also` names, from what `cmd` inherits: local processes talk to
/// each other on loopback and by local names only.
pub(super) fn scrub_env(cmd: &mut Command, also: impl Fn(&str) -> bool) {
    for (k, _) in std::env::vars_os() {
        let upper = k.to_string_lossy().to_ascii_uppercase();
        if upper.ends_with("_PROXY") || also(&upper) {
            cmd.env_remove(&k);
        }
    }
}

/// Field 22 of `/proc/PID/stat`: the process's start time (clock ticks since
/// boot). With the pid it names one process for as long as the machine runs.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

pub(super) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
}

/// The pid and start time in `pid_file`, if the process they name still runs.
pub(super) fn recorded(pid_file: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    let start: u64 = words.next()?.parse().ok()?;
    (alive(pid) && start_time(pid) == Some(start)).then_some(pid)
}

/// Whether the process in `pid_file` that this run started still runs (it
/// may not have exec'd its program yet: `our_pid` is for signalling).
pub(super) fn pid_alive(pid_file: &Path) -> bool {
    recorded(pid_file).is_some()
}

/// The pid in `pid_file` if that very process (same start time) still runs
/// `program`.
pub(super) fn our_pid(pid_file: &Path, program: &str) -> Option<u32> {
    let pid = recorded(pid_file)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    let base = Path::new(std::str::from_utf8(argv0).ok()?).file_name()?;
    (base == program).then_some(pid)
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// SIGTERM to each process of `pid_files` still running its program;
/// SIGKILL after 10 s; returns once all have exited.
pub(super) fn stop(pid_files: &[(PathBuf, &str)]) -> anyhow::Result<()> {
    let mut pids = Vec::new();
    for (f, prog) in pid_files {
        if let Some(pid) = our_pid(f, prog) {
            signal(pid, rustix::process::Signal::TERM);
            pids.push((pid, *prog));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(p, _)| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, prog) in &pids {
        if alive(*pid) {
            signal(*pid, rustix::process::Signal::KILL);
            println!("killed {prog} (pid {pid}): still running 10 s after SIGTERM");
        } else {
            println!("stopped {prog} (pid {pid})");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|(p, _)| alive(*p)) {
        ensure!(
            Instant::now() < deadline,
            "processes did not exit: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(super) fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}
