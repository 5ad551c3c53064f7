//! What the operating system lets this process have: the memory a run may still allocate.

/// The bytes this process can still allocate: the least of the machine's available memory
/// (`MemAvailable`), the room left under its cgroup's limit (`memory.max` − `memory.current`,
/// cgroup v2) and the room left in its address-space limit (`ulimit -v`: the limit − `VmSize`).
/// `None` where none of these can be read (not Linux): then nothing is refused.
pub fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    // "Name:   12345 kB" lines of /proc files.
    let kb_field = |text: &str, name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    let mut limits = Vec::new();
    if let Some(m) = read("/proc/meminfo").and_then(|t| kb_field(&t, "MemAvailable:")) {
        limits.push(m);
    }
    let cgroup =
        |f: &str| read(&format!("/sys/fs/cgroup/{f}")).and_then(|t| t.trim().parse::<u64>().ok());
    if let (Some(max), Some(cur)) = (cgroup("memory.max"), cgroup("memory.current")) {
        limits.push(max.saturating_sub(cur));
    }
    // "Max address space   <soft>   <hard>   bytes"
    let soft_as = read("/proc/self/limits").and_then(|t| {
        let line = t
            .lines()
            .find(|l| l.starts_with("Max address space"))?
            .to_string();
        line.split_whitespace().nth(3)?.parse::<u64>().ok()
    });
    let vm_size = read("/proc/self/status").and_then(|t| kb_field(&t, "VmSize:"));
    if let (Some(limit), Some(used)) = (soft_as, vm_size) {
        limits.push(limit.saturating_sub(used));
    }
    limits.into_iter().min()
}

/// Bytes as GiB (or MiB below one GiB), for messages.
pub fn gib(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// The width of the terminal on stdout, in columns: the terminal's own when stdout is one,
/// else `$COLUMNS` when set (as shells export it), else `None` (a pipe or a file: no limit
/// known).
pub fn terminal_width() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, which lives for the
        // call; on a descriptor that is not a terminal it fails and writes nothing.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 {
            return Some(usize::from(ws.ws_col));
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c: &usize| c > 0)
}

/// The CPU as benchmark figures name it: model, core count and the vector ISA detected, e.g.
/// `Intel(R) Xeon(R) Processor (family 6, model 207), 2 cores, avx512f avx2 fma`.
pub fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let family = match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!(" (family {f}, model {m})"),
        _ => String::new(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    #[cfg(target_arch = "x86_64")]
    let isa: Vec<&str> = [
        ("avx512f", std::is_x86_feature_detected!("avx512f")),
        ("avx2", std::is_x86_feature_detected!("avx2")),
        ("fma", std::is_x86_feature_detected!("fma")),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    #[cfg(not(target_arch = "x86_64"))]
    let isa: Vec<&str> = Vec::new();
    format!(
        "{model}{family}, {cores} core{}, {}",
        if cores == 1 { "" } else { "s" },
        if isa.is_empty() {
            "no x86 vector ISA".to_string()
        } else {
            isa.join(" ")
        }
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let m = super::available_memory().expect("MemAvailable is readable on Linux");
            // Some memory is free, and no more than the machine has.
            assert!(m > 1 << 20 && m < 1 << 50, "{m}");
        }
    }
}
