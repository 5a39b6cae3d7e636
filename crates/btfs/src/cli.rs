//! The command-line tree. Each command is one typed request; `commands` runs it.

use crate::output::Encoding;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "btfs",
    version,
    about = "A BTFS node with a complete BitTorrent client built in",
    long_about = "A BTFS node with a complete BitTorrent client built in.\n\n\
        Download a torrent or magnet into the local BTFS store, inspect torrents and \
        magnets, create torrents and seed files.",
    after_help = "Examples:\n  btfs bittorrent metainfo -t ubuntu.torrent\n  \
        btfs bittorrent create ./photos -o photos.torrent\n  \
        btfs --enc json bittorrent bencode -f ubuntu.torrent"
)]
pub struct Cli {
    /// Output encoding: human-readable text, or JSON on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Encoding::Text)]
    pub enc: Encoding,
    /// Same as `--enc json`.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `btfs --json config …`: the global `--json` given before `config` asks for JSON output,
/// as before any other command, while `config --json` keeps kubo's meaning (VALUE is
/// JSON). clap hands a global flag's value down to a subcommand's own flag of the same
/// name, so such a `--json` is taken out of the arguments here; the returned flag says
/// whether there was one.
pub fn take_root_json_before_config(
    args: Vec<std::ffi::OsString>,
) -> (Vec<std::ffi::OsString>, bool) {
    let mut i = 1;
    let mut json_at = Vec::new();
    while let Some(a) = args.get(i).and_then(|a| a.to_str()) {
        match a {
            "--json" => json_at.push(i),
            "--enc" => i += 1,
            _ if a.starts_with("--enc=") || a == "-h" || a == "--help" => {}
            _ if a == "-V" || a == "--version" => {}
            "config" if !json_at.is_empty() => {
                let out = args
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| !json_at.contains(j))
                    .map(|(_, a)| a)
                    .collect();
                return (out, true);
            }
            _ => break,
        }
        i += 1;
    }
    (args, false)
}

impl Cli {
    pub fn encoding(&self) -> Encoding {
        if self.json {
            Encoding::Json
        } else {
            self.enc
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// BitTorrent: download, inspect, create and seed torrents.
    #[command(
        subcommand,
        after_help = "Examples:\n  btfs bittorrent metainfo -t ubuntu.torrent\n  \
            btfs bittorrent create ./photos -o photos.torrent\n  \
            btfs bittorrent bencode -f ubuntu.torrent"
    )]
    Bittorrent(Box<Bittorrent>),
    /// Create the BTFS repository ($BTFS_PATH, default ~/.btfs).
    #[command(
        long_about = "Create the BTFS repository ($BTFS_PATH, default ~/.btfs).\n\n\
            --profile applies config profiles to the new config (see `btfs config profile \
            apply`). A repo that another command creates on first use gets the profiles \
            named in $BTFS_PROFILE (comma-separated), e.g. BTFS_PROFILE=test for a test suite.",
        after_help = "Examples:\n  btfs init\n  btfs init --profile test"
    )]
    Init(InitArgs),
    /// Show and change the repo's config ($BTFS_PATH/config).
    #[command(
        long_about = "Show and change the repo's config ($BTFS_PATH/config), as kubo's \
            `ipfs config`: `btfs config KEY` prints a value (JSON for lists and objects), \
            `btfs config KEY VALUE` sets a string, with --json a JSON value, with --bool a \
            boolean. Every change is checked as a whole config before the file is replaced; \
            a refused change leaves it as it was. Commands read the config when they start: \
            a change applies to commands (and daemon jobs) started after it, and to the \
            daemon's own addresses on its next start.",
        after_help = "Examples:\n  btfs config show\n  btfs config Bittorrent.Port\n  \
            btfs config --json Bittorrent.Port 51413\n  \
            btfs config --json Bittorrent.DHT.Bootstrap '[\"router.bittorrent.com:6881\"]'\n  \
            btfs config profile apply test"
    )]
    Config(ConfigArgs),
    /// Add files or directories to BTFS and print their CIDs.
    #[command(
        long_about = "Add files or directories to BTFS and print their CIDs.\n\n\
            The defaults give exactly the CIDs of `ipfs add`/`btfs add` in go-btfs and kubo: \
            CIDv0, sha2-256, fixed 256 KiB chunks, a balanced DAG of at most 174 links per \
            node, UnixFS file leaves. Prints `added <cid> <path>` for every file and \
            directory, the root last. Names starting with '.' are skipped unless --hidden; \
            symbolic links are added as UnixFS symlinks, not followed. Without paths, \
            standard input is added.\n\n\
            --nocopy leaves the bytes in the files: their leaves are recorded in the \
            filestore (see `btfs filestore`), read and hash-checked from the files on every \
            read, and only the upper nodes and folders are stored as blocks. Like kubo's, it \
            implies --raw-leaves (different CIDs for files over 256 KiB); with \
            --raw-leaves=false the CIDs are exactly a plain `add`'s (kubo refuses that \
            combination). Standard input cannot be added with --nocopy. With a daemon \
            running, the daemon reads the files where they are (given as absolute paths).",
        after_help = "Examples:\n  btfs add hello.txt\n  btfs add -r ./photos\n  \
            btfs add -Q --cid-version 1 video.mp4\n  echo hi | btfs add -n -Q\n  \
            btfs add --nocopy -r ./videos"
    )]
    Add(AddArgs),
    /// Print the content of a file in BTFS.
    #[command(
        after_help = "Examples:\n  btfs cat QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN\n  \
        btfs cat QmDir…/photos/a.jpg --offset 1000 --length 100"
    )]
    Cat(CatArgs),
    /// Write a file or directory from BTFS to the local filesystem.
    #[command(
        after_help = "Example:\n  btfs get QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o -o hello.txt"
    )]
    Get(GetArgs),
    /// List the links of a BTFS directory.
    #[command(after_help = "Example:\n  btfs ls QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")]
    Ls(LsArgs),
    /// Keep content in the store: list, add and remove pins.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Maintain the repository: garbage collection and verification.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// The filestore: blocks kept as references into files (`add --nocopy`, downloads).
    #[command(
        subcommand,
        long_about = "The filestore: leaf blocks kept as references (path, offset, length) \
            into files instead of block files — files added with `btfs add --nocopy`, and \
            downloads in the default import mode. Every read hashes the bytes, so a file \
            changed or removed since gives an error naming it, never wrong bytes.",
        after_help = "Examples:\n  btfs add --nocopy big.iso\n  btfs filestore ls\n  \
            btfs filestore verify --file-order\n  btfs filestore dups"
    )]
    Filestore(FilestoreCommand),
    /// Run the node: the HTTP API and dashboard on 127.0.0.1:5001, the gateway on 127.0.0.1:8080.
    #[command(
        long_about = "Run the node until interrupted: the HTTP API (every command as \
            POST /api/v1/<command>?arg=…, downloads as jobs) and the dashboard \
            (/dashboard/) on Addresses.API of the repo's config (default 127.0.0.1:5001), \
            and the gateway serving /btfs/{cid}[/path] from the local store on \
            Addresses.Gateway (default 127.0.0.1:8080). While it runs, the other commands \
            that use the repo go through it.",
        after_help = "Examples:\n  btfs daemon\n  btfs daemon --gateway 127.0.0.1:8081 --api 127.0.0.1:5002"
    )]
    Daemon(DaemonArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Config profiles to apply to the new config, comma-separated (test,
    /// default-networking). A repo that exists already is changed with `btfs config
    /// profile apply` instead.
    #[arg(long, value_name = "NAME[,NAME]")]
    pub profile: Option<String>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConfigArgs {
    /// The key, dot-separated (e.g. Bittorrent.DHT.Enabled).
    pub key: Option<String>,
    /// The value to set (a string unless --json or --bool).
    pub value: Option<String>,
    /// Parse VALUE as JSON (numbers, lists, objects).
    #[arg(long)]
    pub json: bool,
    /// Parse VALUE as a boolean (true or false).
    #[arg(long, conflicts_with = "json")]
    pub bool: bool,
    #[command(subcommand)]
    pub command: Option<ConfigCommand>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the whole config.
    Show,
    /// Config profiles: sets of changes for a purpose.
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Apply a profile and print the keys it changed. `test`: loopback only (listen on
    /// 127.0.0.1, a random port, no DHT bootstrap nor torrent nodes, no port mapping, 16
    /// connections per IP); `default-networking`: every key `test` changes back to its
    /// default.
    Apply {
        /// The profile (test, default-networking).
        name: String,
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// How a BitTorrent command meets the network, for this run: each option given
/// overrides the `Bittorrent` section of the config.
#[derive(Args, Debug, Default, Clone)]
pub struct NetArgs {
    /// Port to listen on for peers (overrides Bittorrent.Port and RandomPort); when
    /// taken, the next free one of the 20 after it.
    #[arg(long, value_parser = parse_port, conflicts_with = "random_port")]
    pub port: Option<u16>,
    /// Listen on a random port of 49152-65535 (Bittorrent.RandomPort).
    #[arg(long)]
    pub random_port: bool,
    /// Address to listen on (overrides Bittorrent.ListenAddresses); repeatable, all
    /// with one port.
    #[arg(long = "listen-ip")]
    pub listen_ip: Vec<std::net::IpAddr>,
    /// A DHT node to join through (HOST:PORT); repeatable. Replaces
    /// Bittorrent.DHT.Bootstrap for this run.
    #[arg(long = "dht-bootstrap")]
    pub dht_bootstrap: Vec<String>,
    /// UDP port of our DHT node (default: the peer listen port when free for UDP,
    /// else any).
    #[arg(long)]
    pub dht_port: Option<u16>,
    /// Do not use the DHT, even with --dht-bootstrap or torrent nodes
    /// (Bittorrent.DHT.Enabled).
    #[arg(long)]
    pub no_dht: bool,
    /// Most peer connections per torrent (Bittorrent.MaxPeers, default 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers: Option<u32>,
    /// Most connections with one IP address per torrent, both ways
    /// (Bittorrent.MaxConnectionsPerIP, default 1 as libtorrent).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: Option<u32>,
    /// Most upload bytes per second over all torrents (e.g. 10MiB; 0: unlimited;
    /// Bittorrent.UploadRateLimit).
    #[arg(long, value_parser = parse_size)]
    pub max_upload_rate: Option<u64>,
    /// Most download bytes per second (e.g. 10MiB; 0: unlimited;
    /// Bittorrent.DownloadRateLimit).
    #[arg(long, value_parser = parse_size)]
    pub max_download_rate: Option<u64>,
    /// A block list of IP ranges (P2P or eMule .dat; Bittorrent.IPFilter).
    #[arg(long, value_name = "PATH")]
    pub ip_filter: Option<PathBuf>,
    /// Do not map the listen port (and the DHT's) on the LAN's gateway by UPnP IGD or
    /// NAT-PMP/PCP (Bittorrent.PortMapping).
    #[arg(long)]
    pub no_port_mapping: bool,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Files or directories (standard input when none).
    pub paths: Vec<PathBuf>,
    /// Add directory contents recursively.
    #[arg(short, long)]
    pub recursive: bool,
    /// Wrap the added files in a directory.
    #[arg(short, long = "wrap-with-directory")]
    pub wrap: bool,
    /// Print only the CIDs, one per line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print only the final CID.
    #[arg(short = 'Q', long)]
    pub quieter: bool,
    /// Only compute the CIDs; store nothing.
    #[arg(short = 'n', long)]
    pub only_hash: bool,
    /// CID version of the DAG-PB nodes (1 also turns on raw leaves unless
    /// --raw-leaves=false).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub cid_version: u8,
    /// Store file chunks as raw blocks instead of UnixFS nodes.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub raw_leaves: Option<bool>,
    /// Chunking: size-<bytes> (default size-262144).
    #[arg(short = 's', long, default_value = "size-262144")]
    pub chunker: String,
    /// Pin the added content (default true; --pin=false keeps it unpinned).
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    pub pin: bool,
    /// Include files and directories whose names start with '.'.
    #[arg(short = 'H', long)]
    pub hidden: bool,
    /// Leave the files' bytes where they are: their leaves are recorded in the filestore
    /// as references (path, offset, length) into the files, hash-checked on every read;
    /// only the upper nodes and folders are written as blocks. Implies --raw-leaves
    /// unless --raw-leaves=false (then the CIDs are exactly those of a plain `add`).
    #[arg(long)]
    pub nocopy: bool,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// A CID, optionally followed by a path inside it (CID/dir/file).
    pub path: String,
    /// Byte offset to start at.
    #[arg(short, long, default_value_t = 0)]
    pub offset: u64,
    /// Most bytes to print.
    #[arg(short, long)]
    pub length: Option<u64>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// A CID, optionally followed by a path inside it (CID/dir/file).
    pub path: String,
    /// Where to write (default: the last name of the path, or the CID).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// A directory CID, optionally followed by a path inside it.
    pub path: String,
}

#[derive(Subcommand, Debug)]
pub enum PinCommand {
    /// List pinned CIDs.
    Ls,
    /// Pin CIDs (their blocks must be in the store).
    Add {
        cids: Vec<String>,
        /// Pin only the named block, not what it links to.
        #[arg(long)]
        direct: bool,
    },
    /// Remove pins (the blocks stay until `btfs repo gc`).
    Rm { cids: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Remove every block no pin keeps.
    Gc,
    /// Rehash every block and check that every pinned DAG is complete.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum FilestoreCommand {
    /// List the filestore's references: `<cid> <size> <path> <offset>`.
    #[command(long_about = "List the filestore's references, one line each:\n\n  \
            <cid> <size> <path> <offset>\n\n\
            (kubo's format: the bytes offset..offset+size of the file at path make the block \
            cid). Raw leaves are shown as CIDv1 raw, UnixFS leaves as CIDv0. With CIDs, only \
            those; a CID the filestore does not hold is an error line on stderr and the exit \
            status is 1. --enc json: one object per line with kubo's fields (Status, \
            ErrorMsg, Key {\"/\": cid}, FilePath, Offset, Size).")]
    Ls(FilestoreArgs),
    /// Read and hash-check every reference: `<status> <cid> <size> <path> <offset>`.
    #[command(
        long_about = "Read every reference and check its hash, one line each:\n\n  \
            <status> <cid> <size> <path> <offset>\n\n\
            where status is (kubo's statuses, with their codes as --enc json gives them):\n  \
            ok       (0)   the block can be read from its file\n  \
            changed  (12)  the bytes in the file are not the block's any more\n  \
            no-file  (11)  the file is gone\n  \
            error    (10)  the file cannot be read (permissions, I/O)\n  \
            ERROR    (20)  the database entry is damaged\n  \
            missing  (30)  a CID given is not in the filestore\n\n\
            Exit status: 0 when every block is ok, 1 otherwise (so a script can use it). \
            Re-add a changed file with `btfs add --nocopy`; `pin rm` and `repo gc` drop \
            references no pin keeps."
    )]
    Verify(FilestoreArgs),
    /// List the CIDs held both in the filestore and as block files.
    Dups,
}

#[derive(Args, Debug)]
pub struct FilestoreArgs {
    /// Only these CIDs (default: every reference).
    pub cids: Vec<String>,
    /// Sort by file path and offset (reads each file in order).
    #[arg(long)]
    pub file_order: bool,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Gateway address for this run (overrides Addresses.Gateway).
    #[arg(long)]
    pub gateway: Option<String>,
    /// API address for this run (overrides Addresses.API).
    #[arg(long)]
    pub api: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on every API request (needed when the API
    /// listens on other than loopback). Also read from BTFS_API_TOKEN.
    #[arg(long, env = "BTFS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// How many download jobs run at once; more wait queued, oldest first (seeding
    /// jobs do not count). 0: no limit.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_active_downloads: usize,
}

#[derive(Subcommand, Debug)]
pub enum Bittorrent {
    /// Download a torrent: find peers, verify every piece, write the files.
    #[command(
        long_about = "Download a torrent: find peers through its trackers, --peer and the \
            DHT, verify every piece (SHA-1), and import the files into the BTFS store as \
            they verify, printing `added <cid> <path>` lines like `btfs add -r` and the \
            gateway URL of the root. \
            Progress is a live line on a terminal, plain lines otherwise, and \
            newline-delimited JSON events with --enc json. Verified pieces survive an \
            interruption: run the same command again to resume. Exit status 0 means every \
            selected piece is verified.",
        after_help = "Examples:\n  btfs bittorrent download -t ubuntu.torrent -o ~/Downloads\n  \
            btfs bittorrent download ubuntu.torrent --peer 127.0.0.1:6881 --no-trackers\n  \
            btfs bittorrent download -t set.torrent --only-files '0,*.mkv' --seed"
    )]
    Download(DownloadArgs),
    /// Show what a .torrent file or a magnet link describes.
    #[command(
        after_help = "Examples:\n  btfs bittorrent metainfo -t ubuntu.torrent\n  \
        btfs --enc json bittorrent metainfo -t ubuntu.torrent\n  \
        btfs bittorrent metainfo -m 'magnet:?xt=urn:btih:…'"
    )]
    Metainfo(MetainfoArgs),
    /// Ask a tracker for the seeders, leechers and completed counts of infohashes.
    #[command(
        after_help = "Example:\n  btfs bittorrent scrape -t udp://127.0.0.1:6969 -i 0123…,4567…"
    )]
    Scrape(ScrapeArgs),
    /// Print a bencoded file as lossless JSON, or JSON back as bencode.
    #[command(
        long_about = "Print a bencoded file as lossless JSON, or JSON back as bencode.\n\n\
            JSON form: integers are numbers ({\"/int\": \"digits\"} beyond 64 bits); strings \
            that are UTF-8 text are JSON strings, others (hashes, pieces) are \
            {\"/bytes\": \"<hex>\"}; lists are arrays; dictionaries are objects in file order. \
            A text key starting with '/' is written with one more '/', a binary key as \
            \"/bytes:<hex>\". `--encode` turns that JSON back into the identical bytes.",
        after_help = "Examples:\n  btfs bittorrent bencode -f ubuntu.torrent\n  \
            btfs bittorrent bencode ubuntu.torrent > u.json\n  \
            btfs bittorrent bencode --encode -f u.json -o copy.torrent"
    )]
    Bencode(BencodeArgs),
    /// Seed files: create a torrent per file and print one magnet link each.
    #[command(
        after_help = "Examples:\n  btfs bittorrent serve -f 'a.mp4,b.jpeg'\n  \
        btfs bittorrent serve ./photos"
    )]
    Serve(ServeArgs),
    /// Create a .torrent file from a file or a directory.
    #[command(
        long_about = "Create a .torrent file from a file or a directory.\n\n\
            Output is deterministic: files sorted by path, no creation date unless --date. \
            Without --piece-length the piece length is the smallest power of two from \
            256 KiB to 16 MiB that keeps the torrent at no more than 2048 pieces. Pieces are \
            hashed in parallel on all cores. Symbolic links inside directories are skipped.",
        after_help = "Examples:\n  btfs bittorrent create movie.mkv -o movie.torrent\n  \
            btfs bittorrent create ./photos -o photos.torrent --tracker udp://127.0.0.1:6969 \
            --webseed http://127.0.0.1:8000/"
    )]
    Create(CreateArgs),
    /// Downloads run by the daemon as jobs: list, show, pause, resume, cancel, remove.
    #[command(
        subcommand,
        long_about = "Downloads run by the daemon as jobs. `btfs bittorrent download` hands its \
            download to the daemon when one is running (with --detach it returns at once); \
            jobs survive a restart of the daemon and keep seeding when started with --seed. \
            These commands need a running daemon.",
        after_help = "Examples:\n  btfs bittorrent download --detach 'magnet:?xt=…'\n  \
            btfs bittorrent jobs ls\n  btfs bittorrent jobs pause 3f2a9c1b\n  \
            btfs bittorrent jobs rm 3f2a9c1b --delete-data"
    )]
    Jobs(JobsCommand),
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// A .torrent file or a magnet link.
    pub source: Option<String>,
    /// A .torrent file.
    #[arg(short = 't', long = "torrent", conflicts_with = "source")]
    pub torrent: Option<PathBuf>,
    /// Keep the files in this folder too (default: Bittorrent.DownloadDir, else only in
    /// the BTFS store; the working copy under $BTFS_PATH/bittorrent/downloads is removed
    /// after the import).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// A peer to connect to, as IP:PORT or [IPv6]:PORT; repeatable.
    #[arg(long = "peer")]
    pub peers: Vec<std::net::SocketAddr>,
    /// Only these files: comma-separated indices (from 0, as `metainfo` lists them) or
    /// glob patterns on the path inside the torrent (`*` any text, `?` one character).
    #[arg(long, value_delimiter = ',')]
    pub only_files: Vec<String>,
    /// Fetch pieces in order (for streaming) instead of rarest first.
    #[arg(long)]
    pub sequential: bool,
    /// Keep seeding after the download until interrupted.
    #[arg(long)]
    pub seed: bool,
    /// Hash every piece already on disk, ignoring saved resume data (always done for a
    /// torrent already in the store, unless it is seeded).
    #[arg(long)]
    pub recheck: bool,
    /// Do not contact the torrent's trackers (use only --peer and web seeds).
    #[arg(long)]
    pub no_trackers: bool,
    /// Do not download from the torrent's web seeds (BEP 19 url-list).
    #[arg(long)]
    pub no_webseeds: bool,
    #[command(flatten)]
    pub net: NetArgs,
    /// For a magnet link: give up if no peer sends the metadata within this long.
    #[arg(long, default_value = "5m", value_parser = crate::commands::parse_duration)]
    pub metadata_timeout: std::time::Duration,
    /// Hand the download to the running daemon as a job and return at once (see
    /// `btfs bittorrent jobs`). Without it, a download run through the daemon shows its
    /// progress here and Ctrl-C cancels it.
    #[arg(long)]
    pub detach: bool,
    /// With --enc json: also print the torrent's files, and peers, trackers and the
    /// piece map with every progress event (what the daemon's jobs show).
    #[arg(long, hide = true)]
    pub progress_detail: bool,
    /// For a magnet link: keep the fetched metadata in this .torrent file, and use it
    /// instead of asking peers when it is already there (the daemon's jobs restart so).
    #[arg(long, hide = true)]
    pub metadata_cache: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List the daemon's downloads.
    Ls,
    /// Show one download: files, peers, trackers and the piece map.
    Show { id: String },
    /// Stop a download for now (its verified pieces are kept).
    Pause { id: String },
    /// Start a paused, cancelled or failed download again.
    Resume { id: String },
    /// Stop a download for good (its data stays until `rm --delete-data`).
    Cancel { id: String },
    /// Forget a download, stopping it first.
    Rm {
        id: String,
        /// Also delete its files, resume data and the pin of its content.
        #[arg(long)]
        delete_data: bool,
    },
}

#[derive(Args, Debug)]
pub struct MetainfoArgs {
    /// A .torrent file.
    #[arg(short = 't', long = "torrent", required_unless_present = "magnet")]
    pub torrent: Option<PathBuf>,
    /// A magnet link: its metadata is fetched from the peers and trackers it names
    /// (without any, what the link itself holds is shown).
    #[arg(short = 'm', long = "magnet", conflicts_with = "torrent")]
    pub magnet: Option<String>,
    /// With -m: also ask this peer (IP:PORT); repeatable.
    #[arg(long = "peer")]
    pub peers: Vec<std::net::SocketAddr>,
    /// With -m: write the fetched torrent to this .torrent file.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// With -m: a DHT node to look the infohash up through (HOST:PORT); repeatable.
    /// Replaces Bittorrent.DHT.Bootstrap for this run.
    #[arg(long = "dht-bootstrap")]
    pub dht_bootstrap: Vec<String>,
    /// With -m: do not use the DHT (Bittorrent.DHT.Enabled).
    #[arg(long)]
    pub no_dht: bool,
    /// With -m: do not fetch anything; show what the link itself holds.
    #[arg(long)]
    pub offline: bool,
    /// With -m: a block list of IP ranges never dialled (P2P or eMule .dat; overrides
    /// Bittorrent.IPFilter).
    #[arg(long, value_name = "PATH")]
    pub ip_filter: Option<PathBuf>,
    /// With -m: give up fetching the metadata after this long.
    #[arg(long, default_value = "60s", value_parser = crate::commands::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct ScrapeArgs {
    /// Tracker URL (udp://, http:// or https://).
    #[arg(short = 't', long = "tracker")]
    pub tracker: String,
    /// Comma-separated infohashes (40 hex or 32 base32 characters each).
    #[arg(short = 'i', long = "infohashes", value_delimiter = ',')]
    pub infohashes: Vec<String>,
    /// Give up after this long (e.g. 15s, 500ms, 2m).
    #[arg(long, default_value = "15s", value_parser = crate::commands::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct BencodeArgs {
    /// The file to read ('-' for standard input).
    #[arg(short = 'f', long = "file", conflicts_with = "path")]
    pub file: Option<PathBuf>,
    /// The file to read, go-btfs style.
    pub path: Option<PathBuf>,
    /// Read JSON in the form this command prints and write bencode.
    #[arg(long)]
    pub encode: bool,
    /// Write the output here instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Files or directories to seed (one torrent each).
    pub paths: Vec<PathBuf>,
    /// Files to seed, comma-separated (`\,` is a comma in a name, `\\` a backslash).
    #[arg(short = 'f', long = "files")]
    pub files: Option<String>,
    /// Seed content already in the BTFS store (repeatable).
    #[arg(long = "cid")]
    pub cids: Vec<String>,
    /// Torrent name for --cid content (default: the CID).
    #[arg(long)]
    pub name: Option<String>,
    /// Tracker URL to put in new torrents and announce to (repeatable). None is built in.
    #[arg(long = "tracker")]
    pub trackers: Vec<String>,
    /// Address peers can reach us at, put in the magnets as x.pe (IP:PORT).
    #[arg(long)]
    pub announce_addr: Option<std::net::SocketAddr>,
    /// Mark new torrents private (no DHT, no PEX).
    #[arg(long)]
    pub private: bool,
    #[command(flatten)]
    pub net: NetArgs,
    /// Piece length of new torrents: bytes or with a unit (256KiB); automatic by default.
    #[arg(short = 'l', long, value_parser = parse_size)]
    pub piece_length: Option<u64>,
    /// Also write the .torrent files into this folder.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Do not add the files to the BTFS store.
    #[arg(long)]
    pub no_add: bool,
    /// List what is served (from earlier runs) and exit.
    #[arg(long)]
    pub list: bool,
    /// Stop serving a torrent (by infohash or name) and exit.
    #[arg(long)]
    pub remove: Option<String>,
    /// Seed for this long, then stop (e.g. 30s, 2h); until interrupted by default.
    #[arg(long, value_parser = crate::commands::parse_duration)]
    pub duration: Option<std::time::Duration>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The file or directory to share (several: one torrent each).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output .torrent file (a folder when several paths are given; default: NAME.torrent
    /// in the current folder).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Piece length: bytes or with a unit (256KiB, 1MiB); a power of two from 16 KiB.
    #[arg(short = 'l', long, value_parser = parse_size)]
    pub piece_length: Option<u64>,
    /// Tracker URL; repeat for more tiers, separate URLs of one tier with commas.
    #[arg(short = 't', long = "tracker")]
    pub trackers: Vec<String>,
    /// Web seed URL (BEP 19); repeatable.
    #[arg(short = 'w', long = "webseed")]
    pub webseeds: Vec<String>,
    /// Mark the torrent private (BEP 27: trackers only, no DHT or peer exchange).
    #[arg(long)]
    pub private: bool,
    /// A comment stored in the torrent.
    #[arg(short, long)]
    pub comment: Option<String>,
    /// Store the current time as the creation date (makes the file time-dependent;
    /// the infohash does not change).
    #[arg(long)]
    pub date: bool,
    /// Hashing threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// `--port`: 1-65535 (a random port is `--random-port`).
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) => Err("0 is not a port; for a random one use --random-port".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{s:?} is not a port (1-65535)")),
    }
}

/// Parses `262144`, `256K`, `256KiB`, `1M`, `1MiB` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 262144, 256KiB, 1MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("262144"), Ok(262144));
        assert_eq!(parse_size("256KiB"), Ok(262144));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn a_json_before_config_is_the_output_encoding() {
        let v = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let (args, json) = take_root_json_before_config(v(&["btfs", "--json", "config", "K"]));
        assert!(json);
        assert_eq!(args, v(&["btfs", "config", "K"]));
        let same = v(&["btfs", "config", "--json", "K", "1"]);
        assert_eq!(take_root_json_before_config(same.clone()), (same, false));
        let other = v(&["btfs", "--json", "--enc", "text", "init"]);
        assert_eq!(take_root_json_before_config(other.clone()), (other, false));
        let (args, json) = take_root_json_before_config(v(&[
            "btfs", "--enc", "text", "--json", "config", "--json", "K", "1",
        ]));
        assert!(json);
        assert_eq!(
            args,
            v(&["btfs", "--enc", "text", "config", "--json", "K", "1"])
        );
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("6881"), Ok(6881));
        assert!(parse_port("0").unwrap_err().contains("--random-port"));
        assert!(parse_port("70000").is_err());
    }

    #[test]
    fn tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
