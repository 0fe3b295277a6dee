//! `lightvm daemon` and its clients: create, ps, inspect, logs, stop, rm, pool — and
//! the hidden `lightvm shell` that the daemon starts for each VM.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context};
use hyper::{Method, StatusCode};
use lightvm_toolstack::api::{
    CreateRequest, Guest, LimitsRequest, LinuxProgram, PoolStatus, VmState, VmView,
};
use lightvm_toolstack::client::Answer;
use lightvm_toolstack::{server, shell_main, Client, Daemon, DaemonConfig, PersonalityImage};
use lightvm_vmm::parse_mem_size;

use crate::cli::{CreateArgs, DaemonArgs, LogsArgs, PoolArgs, PsArgs, ShellArgs, VmIdArgs};
use crate::exit_code;

pub fn daemon(args: &DaemonArgs) -> anyhow::Result<u8> {
    let socket_group = args
        .socket_group
        .as_deref()
        .map(group_id)
        .transpose()
        .context("--socket-group")?;
    let config = DaemonConfig {
        socket: args.socket.clone(),
        socket_group,
        socket_mode: args
            .socket_mode
            .unwrap_or(if socket_group.is_some() { 0o660 } else { 0o600 }),
        state_dir: args.state_dir.clone(),
        pool_size: args.pool,
        pool_mem: parse_mem_size(&args.pool_mem).context("--pool-mem")?,
        linux_pool_size: args.linux_pool,
        linux_pool_mem: parse_mem_size(&args.linux_pool_mem).context("--linux-pool-mem")?,
        personality: personality(args),
        max_vms: args.max_vms,
        max_mem: parse_mem_size(&args.max_mem).context("--max-mem")?,
        shell_exe: std::env::current_exe().context("finding the lightvm executable")?,
        platform: args.platform.resolve()?,
        seccomp: !args.no_seccomp,
        jail: !args.no_jail,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let daemon = Daemon::open(config)?;
        let adopted = daemon.adopt()?;
        if let Some(why) = daemon.linux_unavailable() {
            eprintln!("lightvm daemon: running no Linux programs: {why}");
        }
        eprintln!(
            "lightvm daemon: listening on {}, {adopted} running VMs adopted, pool of {} on the {} platform",
            args.socket.display(),
            args.pool,
            daemon.config().platform
        );
        server::serve(daemon).await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// The personality image: the one named, or the one built now from
/// crates/personality (before the daemon's filter, which allows no `execve`);
/// a build that fails leaves the daemon serving unikernels only.
fn personality(args: &DaemonArgs) -> PersonalityImage {
    match &args.personality {
        Some(image) => PersonalityImage::Given(image.clone()),
        None => PersonalityImage::Built(lightvm_images::personality::build().map_err(|e| {
            format!("building the Linux personality (crates/personality) failed: {e}")
        })),
    }
}

/// A group's id: a number, or a name looked up in /etc/group (read directly: a
/// static binary has no NSS modules to ask).
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(group))
                .then(|| fields.nth(1)?.parse::<u32>().ok())
                .flatten()
        })
        .with_context(|| format!("no group {group:?} in /etc/group"))
}

pub fn shell(args: &ShellArgs) -> u8 {
    // The daemon hands the shell its control socket as stdin.
    let control = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(error) => {
            eprintln!("lightvm shell: no control socket on stdin: {error}");
            return exit_code::LIGHTVM_ERROR;
        }
    };
    u8::try_from(shell_main::run(
        args.platform,
        args.mem,
        args.linux,
        !args.no_jail,
        control,
    ))
    .unwrap_or(exit_code::LIGHTVM_ERROR)
}

/// Runs one client call to completion.
fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Answer> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(client.call(method, path, body.as_ref()))?)
}

/// The answer's body as `T`, or the daemon's error message as the error.
fn expect<T: serde::de::DeserializeOwned>(answer: Answer, ok: StatusCode) -> anyhow::Result<T> {
    if answer.status != ok {
        bail!("{}", answer.error_message());
    }
    serde_json::from_slice(&answer.body).context("unexpected answer from the daemon")
}

pub fn create(args: &CreateArgs) -> anyhow::Result<u8> {
    let guest = match &args.rootfs {
        Some(rootfs) => Guest::Linux(LinuxProgram {
            rootfs: std::fs::canonicalize(rootfs)
                .with_context(|| format!("--rootfs {}", rootfs.display()))?,
            // A path inside the root: sent as given, made absolute from its top.
            program: format!("/{}", args.image.to_string_lossy().trim_start_matches('/')),
            args: args.program.program_args.clone(),
            env: args.program.env(),
            cwd: args.program.cwd.clone(),
            trace_syscalls: args.program.trace_syscalls,
        }),
        None => Guest::Image(
            std::fs::canonicalize(&args.image)
                .with_context(|| format!("image {}", args.image.display()))?,
        ),
    };
    let request = CreateRequest {
        guest,
        mem: args.mem.clone(),
        cmdline: args.cmdline.clone(),
        timeout_ms: args
            .timeout
            .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        net: args.net.clone(),
        limits: LimitsRequest {
            memory: args.memory_limit.clone(),
            cpu: args.cpu_limit.clone(),
            pids: args.pids_limit,
        },
    };
    let body = serde_json::to_value(&request)?;
    let client = Client::new(&args.socket.socket);
    let vm: VmView = expect(
        call(&client, Method::POST, "/vms", Some(body))?,
        StatusCode::CREATED,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vm)?);
    } else {
        println!("{}", vm.id);
    }
    Ok(0)
}

pub fn ps(args: &PsArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.socket.socket);
    let vms: Vec<VmView> = expect(call(&client, Method::GET, "/vms", None)?, StatusCode::OK)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vms)?);
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16}  {:<8}  {:<20}  {:>6}  {:>9}  EXIT",
        "ID", "STATE", "IMAGE", "MEM", "UPTIME"
    )?;
    for vm in vms {
        // A Linux program is shown by its own name (its image is the personality).
        let image = match &vm.linux {
            Some(linux) => linux
                .program
                .rsplit('/')
                .next()
                .map_or_else(|| linux.program.clone(), str::to_owned),
            None => vm.image.file_name().map_or_else(
                || vm.image.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            ),
        };
        let state = match vm.state {
            VmState::Running => "running",
            VmState::Exited => "exited",
        };
        let exit = vm.exit.map_or(String::new(), |exit| match exit.status {
            Some(status) => format!("{:?} ({status})", exit.outcome).to_lowercase(),
            None => format!("{:?}", exit.outcome).to_lowercase(),
        });
        writeln!(
            out,
            "{:<16}  {:<8}  {:<20}  {:>5}M  {:>8.1}s  {exit}",
            vm.id,
            state,
            image,
            vm.mem_size >> 20,
            vm.uptime_s
        )?;
    }
    Ok(0)
}

pub fn inspect(args: &VmIdArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.socket.socket);
    let answer = call(&client, Method::GET, &format!("/vms/{}", args.id), None)?;
    let vm: VmView = expect(answer, StatusCode::OK)?;
    println!("{}", serde_json::to_string_pretty(&vm)?);
    Ok(0)
}

pub fn logs(args: &LogsArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.socket.socket);
    let mut path = format!("/vms/{}/console?follow={}", args.id, args.follow);
    if let Some(tail) = args.tail {
        path.push_str(&format!("&tail={tail}"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut stdout = std::io::stdout();
    let mut failure = Vec::new();
    let status = runtime.block_on(client.stream(Method::GET, &path, None, |chunk| {
        if failure.is_empty() {
            let _ = stdout.write_all(chunk).and_then(|()| stdout.flush());
        }
        failure.extend_from_slice(chunk);
    }))?;
    if status != StatusCode::OK {
        let answer = Answer {
            status,
            body: failure.into(),
        };
        bail!("{}", answer.error_message());
    }
    Ok(0)
}

pub fn stop(args: &VmIdArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.socket.socket);
    let answer = call(
        &client,
        Method::POST,
        &format!("/vms/{}/stop", args.id),
        None,
    )?;
    let vm: VmView = expect(answer, StatusCode::OK)?;
    println!("{}", vm.id);
    Ok(0)
}

pub fn rm(args: &VmIdArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.socket.socket);
    let answer = call(&client, Method::DELETE, &format!("/vms/{}", args.id), None)?;
    if answer.status != StatusCode::NO_CONTENT {
        bail!("{}", answer.error_message());
    }
    println!("{}", args.id);
    Ok(0)
}

pub fn pool(args: &PoolArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.socket.socket);
    let answer = if args.size.is_some() || args.linux_size.is_some() {
        let resize = lightvm_toolstack::api::PoolResize {
            size: args.size,
            linux_size: args.linux_size,
        };
        call(
            &client,
            Method::PUT,
            "/pool",
            Some(serde_json::to_value(resize)?),
        )?
    } else {
        call(&client, Method::GET, "/pool", None)?
    };
    let pool: PoolStatus = expect(answer, StatusCode::OK)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&pool)?);
    } else {
        println!(
            "pool: {} ready, {} preparing, target {} (shells of {} MiB, {} platform)",
            pool.ready,
            pool.preparing,
            pool.target,
            pool.mem_size >> 20,
            pool.platform
        );
        if let Some(failing) = &pool.failing {
            println!(
                "pool: preparing shells failed {} times in a row: {}",
                failing.in_a_row, failing.error
            );
        }
        let linux = &pool.linux;
        match &linux.unavailable {
            Some(why) => println!("linux pool: none, this daemon runs no Linux programs: {why}"),
            None => println!(
                "linux pool: {} ready, {} preparing, target {} (shells of {} MiB for Linux programs)",
                linux.ready,
                linux.preparing,
                linux.target,
                linux.mem_size >> 20
            ),
        }
        if let Some(failing) = &linux.failing {
            println!(
                "linux pool: preparing shells failed {} times in a row: {}",
                failing.in_a_row, failing.error
            );
        }
    }
    Ok(0)
}
