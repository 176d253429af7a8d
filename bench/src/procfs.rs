//! What the driver reads about a process from `/proc`: CPU time, memory,
//! context switches. Linux only.

use std::fs;
use std::io;
use std::time::Duration;

/// User + system CPU time of a whole process (all its threads, including
/// the ones that have exited), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of stat.
    Ok(ticks_to_duration(field(&fields, 14)? + field(&fields, 15)?))
}

/// CPU time of this process plus that of its children it has waited for
/// (fields 14–17 of stat).
pub fn own_and_children_cpu() -> io::Result<Duration> {
    let fields = stat_fields(std::process::id())?;
    let mut total = 0;
    for i in 14..=17 {
        total += field(&fields, i)?;
    }
    Ok(ticks_to_duration(total))
}

/// The fields of `/proc/PID/stat` from field 3 on.
fn stat_fields(pid: u32) -> io::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("no `)` in stat"))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// Field `n` (1-based, as in proc(5)) of what `stat_fields` returned.
fn field(fields: &[String], n: usize) -> io::Result<u64> {
    fields
        .get(n - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| bad("short stat"))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

/// CPU time the whole machine has spent busy (user, nice, system, irq,
/// softirq over all CPUs) since boot, from `/proc/stat`.
pub fn machine_busy() -> io::Result<Duration> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad("no cpu line"))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq ...
    let busy = [0, 1, 2, 5, 6].iter().filter_map(|&i| values.get(i)).sum();
    Ok(ticks_to_duration(busy))
}

/// The number of CPUs online, whatever this thread is pinned to.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// A `kB` line of `/proc/PID/status`, such as `VmHWM` or `VmRSS`, in bytes.
pub fn status_bytes(pid: u32, key: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field(&status, key)
        .map(|kb| kb * 1024)
        .ok_or_else(|| bad("missing status field"))
}

/// A plain number of `/proc/PID/status`, such as `Threads`.
pub fn status_value(pid: u32, key: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field(&status, key).ok_or_else(|| bad("missing status field"))
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Context switches (voluntary + involuntary) of the process's live
/// threads. Threads that have exited are not counted, so compare only
/// windows in which the set of threads stays the same.
pub fn context_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("status");
        // A thread may exit between read_dir and the read.
        let Ok(status) = fs::read_to_string(path) else {
            continue;
        };
        total += status_field(&status, "voluntary_ctxt_switches").unwrap_or(0);
        total += status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Ok(total)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Open files the harness asks for: the idle scenario holds 10,000
/// connections, and the std server spends two descriptors on each
/// (`try_clone`).
const WANTED_FILES: u64 = 65_536;

/// Raises this process's limit on open files (children inherit it): to
/// [`WANTED_FILES`] when allowed (root may raise the hard limit), else to
/// the hard limit. Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_max < WANTED_FILES {
        let raised = libc::rlimit {
            rlim_cur: WANTED_FILES,
            rlim_max: WANTED_FILES,
        };
        // SAFETY: `raised` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(WANTED_FILES);
        }
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max.min(WANTED_FILES.max(limit.rlim_cur));
        // SAFETY: `limit` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Restricts the calling thread (and the threads and processes it starts
/// afterwards) to the CPUs listed, such as `"0"` or `"1,2"`.
pub fn pin_to_cpus(list: &str) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in list.split(',').filter(|s| !s.is_empty()) {
        let cpu: usize = cpu.trim().parse().map_err(|_| bad("bad CPU list"))?;
        // SAFETY: CPU_SET checks the index against the set's size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        cpu_time(pid).unwrap();
        own_and_children_cpu().unwrap();
        assert!(machine_busy().unwrap() > Duration::ZERO);
        assert!(online_cpus() >= 1);
        assert!(status_bytes(pid, "VmHWM").unwrap() > 0);
        assert!(status_value(pid, "Threads").unwrap() >= 1);
        assert!(context_switches(pid).is_ok());
        assert_eq!(status_field("VmRSS:\t  1234 kB\n", "VmRSS"), Some(1234));
        assert_eq!(status_field("VmRSSx: 1 kB\n", "VmRSS"), None);
    }
}
