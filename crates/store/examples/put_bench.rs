//! Measures the blockstore's write path: imports one file with `btfs add`'s defaults
//! (`ImportOptions::default().import_file`) into `Discard` (as `add -n`) and into a fresh
//! `Blockstore` (as `add`, then `sync`), alternating, and prints wall time and this
//! process's user and system CPU (getrusage) per run and their medians.
//!
//!   cargo run -p btfs-store --release --example put_bench -- [--dir D] [--file F] [--mib N]
//!       [--runs N] [--keep]
//!
//! `--dir` (default `tmp`, where the stores go) must be disk-backed (not a tmpfs). The
//! source is `--file`, or else `D/data.bin`, made (again) from /dev/urandom when its length
//! is not `--mib` MiB (default 1024); it is imported once untimed to warm the page cache.
//! Each store is a new folder, deleted after its run (not timed); with `--keep` they are
//! all deleted at the end instead. That matters on ext4 without a journal: for some
//! minutes after many files are deleted, creating each new file scans past the recently
//! deleted inodes, which makes a store run several times slower.
//! `others` is the CPU time the rest of the machine used during the run (from
//! /proc/stat): a large value means the wall time is not this code's alone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;
use store::importer::{BlockSink, Discard};
use store::{Blockstore, ImportOptions};

/// One run: seconds of wall (import), user, system, sync, and others' CPU.
type Run = [f64; 5];

/// This process's user and system CPU seconds.
fn own_cpu() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// Busy CPU seconds of the whole machine (user, nice, system, irq, softirq).
fn machine_cpu() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 7 {
        return 0.0;
    }
    (v[0] + v[1] + v[2] + v[5] + v[6]) / 100.0
}

fn run(file: &Path, store: Option<&Path>) -> io::Result<Run> {
    let blocks = store.map(Blockstore::open).transpose()?;
    let sink: &dyn BlockSink = match &blocks {
        Some(b) => b,
        None => &Discard,
    };
    let ((u0, s0), m0, t0) = (own_cpu(), machine_cpu(), Instant::now());
    let root = ImportOptions::default().import_file(file, sink, &mut |_| {})?;
    let wall = t0.elapsed().as_secs_f64();
    let ((u1, s1), m1) = (own_cpu(), machine_cpu());
    let t1 = Instant::now();
    if let Some(b) = &blocks {
        b.sync()?;
    }
    let sync = t1.elapsed().as_secs_f64();
    eprintln!("  root {}", root.cid);
    let (user, sys) = (u1 - u0, s1 - s0);
    Ok([wall, user, sys, sync, (m1 - m0 - user - sys).max(0.0)])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> io::Result<()> {
    let (mut dir, mut mib, mut runs, mut keep) = (PathBuf::from("tmp"), 1024u64, 3usize, false);
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| io::Error::other(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--dir" => dir = value()?.into(),
            "--file" => file = Some(PathBuf::from(value()?)),
            "--mib" => mib = value()?.parse().map_err(io::Error::other)?,
            "--runs" => runs = value()?.parse::<usize>().map_err(io::Error::other)?.max(1),
            "--keep" => keep = true,
            _ => return Err(io::Error::other(format!("unknown argument {a}"))),
        }
    }
    fs::create_dir_all(&dir)?;
    let file = match file {
        Some(f) => f,
        None => {
            let f = dir.join("data.bin");
            if fs::metadata(&f).map(|m| m.len()).ok() != Some(mib << 20) {
                let mut src = io::Read::take(fs::File::open("/dev/urandom")?, mib << 20);
                io::copy(&mut src, &mut fs::File::create(&f)?)?;
            }
            f
        }
    };
    let mib = fs::metadata(&file)?.len() as f64 / f64::from(1 << 20);
    // Untimed: the first reads after the file was written cost more (page cache warm-up).
    run(&file, None)?;
    let (mut discard, mut stored) = (Vec::new(), Vec::new());
    let mut made = Vec::new();
    for i in 0..runs {
        let r = run(&file, None)?;
        eprintln!("run {i} discard {r:.2?}");
        discard.push(r);
        let store = dir.join(format!("put-bench-store-{}-{i}", std::process::id()));
        let r = run(&file, Some(&store))?;
        eprintln!("run {i} store   {r:.2?}");
        stored.push(r);
        if keep {
            made.push(store);
        } else {
            fs::remove_dir_all(&store)?;
        }
    }
    for store in made {
        fs::remove_dir_all(&store)?;
    }
    println!("{mib:.0} MiB, median of {runs}: seconds");
    println!(
        "{:<8} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "sink", "wall", "user", "sys", "sync", "others"
    );
    for (name, rs) in [("discard", &discard), ("store", &stored)] {
        let m: Vec<f64> = (0..5)
            .map(|k| median(rs.iter().map(|r| r[k]).collect()))
            .collect();
        println!(
            "{name:<8} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2}",
            m[0], m[1], m[2], m[3], m[4]
        );
    }
    Ok(())
}
