//! `elkfs-mount` (also installed as `mount.elkfs`): mounts an ElkFS cluster.

use std::path::PathBuf;

use clap::Parser;
use elkfs_common::defaults;

#[derive(Parser, Debug)]
#[command(
    name = "elkfs-mount",
    version,
    about = "Mount an ElkFS filesystem",
    after_help = format!(
        "SOURCE is [HOST[:PORT]][:/SUBDIR]; the master defaults to {} (or ${}).\n\
         Options (-o): ro, rw, allow_other, subdir=DIR, master=ADDR, master_timeout=SECS (how\n\
         long operations wait for an unreachable master before EIO, default {} s),\n\
         passwordfile=FILE (the export's password, first line; mode 600) or password=PASS,\n\
         bind=IP (the local address to connect from), and the generic ones mount(8) passes.",
        defaults::MASTER_ADDR,
        defaults::MASTER_ENV,
        defaults::MASTER_TIMEOUT.as_secs()
    )
)]
struct Args {
    /// What to mount: [HOST[:PORT]][:/SUBDIR].
    source: String,
    /// Where to mount it.
    mount_point: PathBuf,
    /// Mount options, comma-separated (may be repeated).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground instead of going to the background once mounted.
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Write the mount point to FILE once the mount is live.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Accepted for mount(8) compatibility (no effect): -n, -s, -v.
    #[arg(short = 'n', hide = true)]
    no_mtab: bool,
    /// Accepted for mount(8) compatibility.
    #[arg(short = 's', hide = true)]
    sloppy: bool,
    /// Accepted for mount(8) compatibility.
    #[arg(short = 'v', hide = true)]
    verbose: bool,
}

fn main() {
    let args = Args::parse();
    // fuser logs every reply the kernel no longer waits for (an interrupted request, or one
    // racing an unmount) as an error; libfuse treats that as normal and so do we.
    elkfs_common::logging::init_with(&["fuser::reply=off"]);
    elkfs_common::malloc::keep_freed_buffers();
    let spec = match elkfs_mount::options::parse(
        &args.source,
        args.mount_point,
        &args.options,
        args.foreground,
    ) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("elkfs-mount: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = elkfs_mount::run(spec, args.ready_file) {
        eprintln!("elkfs-mount: {e:#}");
        std::process::exit(1);
    }
}
