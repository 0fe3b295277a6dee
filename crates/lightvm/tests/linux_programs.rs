//! End-to-end: unmodified Linux programs run as lightvm unikernels through the
//! Linux personality, on every platform the host has. Each test runs the same
//! binary as a host process where that makes sense and compares what a user
//! would compare: the output and the exit code.

mod common;

use std::path::Path;
use std::process::Output;

use common::programs::{compile, compile_dynamic, run_on_host, Libc, Rootfs};
use lightvm_vmm::Platform;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn everything(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

/// The file names in `dir`, sorted as `ls` sorts them in the C locale.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn static_hello_behaves_as_on_the_host(platform: Platform) {
    for libc in [Libc::Glibc, Libc::Musl] {
        let hello = compile(Path::new("hello.c"), libc, &[]);
        let root = Rootfs::new(&format!("hello-{}-{}", libc.name(), platform.name()));
        root.add(&hello, "/bin/hello");
        std::fs::create_dir_all(root.dir.join("srv")).unwrap();
        let args = ["7", "two words"];
        let guest = root.run(
            platform,
            &["--env", "GREETING=hi", "--cwd", "/srv"],
            "/bin/hello",
            &args,
        );
        let host = std::process::Command::new(&hello)
            .args(args)
            .env_clear()
            .env("GREETING", "hi")
            .current_dir(root.dir.join("srv"))
            .output()
            .unwrap();
        assert_eq!(
            guest.status.code(),
            Some(7),
            "{libc:?}: {}",
            everything(&guest)
        );
        assert_eq!(host.status.code(), Some(7));
        let host_out = stdout(&host).replace(&root.dir.join("srv").display().to_string(), "/srv");
        assert_eq!(stdout(&guest), host_out, "{libc:?}");
        assert!(stdout(&guest).contains("cwd=/srv"), "{}", stdout(&guest));
    }
}

fn the_benchs_c_baselines_run_unmodified(platform: Platform) {
    let baselines = common::repo().join("crates/bench/baselines");
    let root = Rootfs::new(&format!("baselines-{}", platform.name()));
    for name in ["hello", "cpu", "stream", "idle"] {
        let binary = compile(&baselines.join(format!("{name}.c")), Libc::Glibc, &[]);
        root.add(&binary, &format!("/{name}"));
    }
    let hello = root.run(platform, &[], "/hello", &[]);
    assert_eq!(hello.status.code(), Some(0), "{}", everything(&hello));
    assert_eq!(stdout(&hello), "Hello from a process!\n");
    // The compute kernels: the same checksum as on the host; the timings differ.
    for name in ["cpu", "stream"] {
        let guest = root.run(platform, &["--mem", "1G"], &format!("/{name}"), &[]);
        let host = run_on_host(&root.dir.join(name), &[], &root.dir);
        assert_eq!(
            guest.status.code(),
            Some(0),
            "{name}: {}",
            everything(&guest)
        );
        let checksum = |text: &str| {
            text.split_whitespace()
                .find(|word| word.starts_with("checksum="))
                .map(str::to_owned)
        };
        assert!(checksum(&stdout(&host)).is_some());
        assert_eq!(
            checksum(&stdout(&guest)),
            checksum(&stdout(&host)),
            "{name}"
        );
    }
    // The idle workload says it is up and then waits for good (in `pause`).
    let idle = root.run(platform, &["--timeout", "2s"], "/idle", &[]);
    assert_eq!(
        stdout(&idle),
        "idle: up, waiting\n",
        "{}",
        everything(&idle)
    );
    assert_eq!(idle.status.code(), Some(124), "{}", everything(&idle));
}

fn threads_share_locks_condition_variables_and_thread_locals(platform: Platform) {
    for libc in [Libc::Glibc, Libc::Musl] {
        let threads = compile(Path::new("threads.c"), libc, &[]);
        let root = Rootfs::new(&format!("threads-{}-{}", libc.name(), platform.name()));
        root.add(&threads, "/threads");
        let guest = root.run(platform, &[], "/threads", &[]);
        let host = run_on_host(&threads, &[], &root.dir);
        assert_eq!(
            guest.status.code(),
            Some(0),
            "{libc:?}: {}",
            everything(&guest)
        );
        assert_eq!(stdout(&guest), stdout(&host), "{libc:?}");
        assert_eq!(stdout(&guest), "counter=400000 sum=100\n");
    }
}

fn vector_registers_survive_system_calls_and_thread_switches(platform: Platform) {
    let vectors = compile(Path::new("vectors.c"), Libc::Glibc, &[]);
    let root = Rootfs::new(&format!("vectors-{}", platform.name()));
    root.add(&vectors, "/vectors");
    let guest = root.run(platform, &[], "/vectors", &[]);
    let host = run_on_host(&vectors, &[], &root.dir);
    assert_eq!(stdout(&guest), stdout(&host), "{}", everything(&guest));
    assert!(
        stdout(&guest).ends_with(", 0 mismatches\n"),
        "{}",
        stdout(&guest)
    );
    assert_eq!(guest.status.code(), Some(0));
}

/// The clock calls a traced run of `clocks libc-only` made (none once the C
/// library reads the clock in the vDSO).
fn clock_calls(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter(|line| {
            ["clock_gettime(", "gettimeofday(", "time("]
                .iter()
                .any(|call| line.starts_with(&format!("[lx] {call}")))
        })
        .collect()
}

fn the_clocks_are_read_in_the_vdso_and_agree_with_the_system_calls(platform: Platform) {
    let source = Path::new("clocks.c");
    let dynamic = compile_dynamic(source);
    let dynamic_path = dynamic.to_string_lossy().into_owned();
    let dynamic_root = Rootfs::of_host_programs(
        &format!("clocks-dynamic-{}", platform.name()),
        &[&dynamic_path],
        &[],
    );
    let static_root = Rootfs::new(&format!("clocks-static-{}", platform.name()));
    for libc in [Libc::Glibc, Libc::Musl] {
        static_root.add(
            &compile(source, libc, &[]),
            &format!("/clocks-{}", libc.name()),
        );
    }
    let cases = [
        (&static_root, "/clocks-glibc".to_owned()),
        (&static_root, "/clocks-musl".to_owned()),
        (&dynamic_root, dynamic_path.clone()),
    ];
    for (root, program) in cases {
        let guest = root.run(platform, &[], &program, &[]);
        assert_eq!(
            stdout(&guest),
            "AT_SYSINFO_EHDR: present\nvDSO symbols found: 6 of 6\n\
             clocks agree with the system calls\n",
            "{program}: {}",
            everything(&guest)
        );
        assert_eq!(guest.status.code(), Some(0), "{program}");
        // Through the C library, no clock is a system call any more.
        let traced = root.run(platform, &["--trace-syscalls"], &program, &["libc-only"]);
        let trace = stdout(&traced);
        assert!(trace.contains("libc-only: 1\n"), "{program}: {trace}");
        assert_eq!(
            clock_calls(&trace),
            Vec::<&str>::new(),
            "{program}: {trace}"
        );
        assert_eq!(traced.status.code(), Some(0), "{program}");
    }
}

fn a_dynamically_linked_host_program_runs_from_the_root_lightvm_rootfs_made(platform: Platform) {
    let root = Rootfs::of_host_programs(&format!("dyn-{}", platform.name()), &["/bin/ls"], &[]);
    let guest = root.run(platform, &[], "/bin/ls", &["-1", "/etc"]);
    assert_eq!(guest.status.code(), Some(0), "{}", everything(&guest));
    let expected: String = listing(&root.dir.join("etc"))
        .iter()
        .map(|name| format!("{name}\n"))
        .collect();
    assert_eq!(stdout(&guest), expected);
}

fn debians_nginx_redis_and_iperf3_start_and_report_their_versions(platform: Platform) {
    let programs = [
        "/usr/sbin/nginx",
        "/usr/bin/redis-server",
        "/usr/bin/iperf3",
    ];
    let root = Rootfs::of_host_programs(&format!("servers-{}", platform.name()), &programs, &[]);
    for (program, flag) in programs.iter().zip(["-v", "--version", "--version"]) {
        let guest = root.run(platform, &[], program, &[flag]);
        let host = run_on_host(Path::new(program), &[flag], Path::new("/"));
        assert_eq!(
            guest.status.code(),
            host.status.code(),
            "{program}: {}",
            everything(&guest)
        );
        // The first line names the program and its version, on the host as here.
        let first = |text: String| text.lines().next().map(str::to_owned);
        assert_eq!(
            first(stdout(&guest)),
            first(everything(&host)),
            "{program}: {}",
            everything(&guest)
        );
    }
}

fn busybox_runs_a_shell_script(platform: Platform) {
    let root = Rootfs::new(&format!("busybox-{}", platform.name()));
    root.add(Path::new("/bin/busybox"), "/bin/busybox");
    std::fs::create_dir_all(root.dir.join("etc/conf.d")).unwrap();
    std::fs::write(root.dir.join("etc/motd"), "hello\n").unwrap();
    let guest = root.run(
        platform,
        &[],
        "/bin/busybox",
        &["sh", "-c", "echo hi; ls /etc"],
    );
    assert_eq!(guest.status.code(), Some(0), "{}", everything(&guest));
    let mut lines = stdout(&guest)
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("hi"),
        "{}",
        stdout(&guest)
    );
    lines.remove(0);
    let names: Vec<String> = lines
        .iter()
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    // The personality gives the guest its /etc/hostname, as container runtimes do.
    let mut expected = listing(&root.dir.join("etc"));
    expected.push("hostname".into());
    expected.sort();
    assert_eq!(names, expected);
}

fn a_wild_pointer_ends_the_vm_with_the_fault_named(platform: Platform) {
    let misbehave = compile(Path::new("misbehave.c"), Libc::Glibc, &[]);
    let root = Rootfs::new(&format!("wild-{}", platform.name()));
    root.add(&misbehave, "/misbehave");
    let guest = root.run(platform, &[], "/misbehave", &["wild"]);
    assert_eq!(guest.status.code(), Some(126), "{}", everything(&guest));
    assert!(stdout(&guest).contains("writing to 0x7ead00000000"));
    assert!(!stdout(&guest).contains("went through"));
    let err = stderr(&guest);
    assert!(
        err.contains("page fault") && err.contains("0x7ead00000000"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

fn an_unknown_system_call_gets_enosys_and_is_counted(platform: Platform) {
    let misbehave = compile(Path::new("misbehave.c"), Libc::Glibc, &[]);
    let root = Rootfs::new(&format!("enosys-{}", platform.name()));
    root.add(&misbehave, "/misbehave");
    let guest = root.run(platform, &[], "/misbehave", &["enosys"]);
    assert_eq!(guest.status.code(), Some(0), "{}", everything(&guest));
    assert_eq!(stdout(&guest), "syscall 1000 = -1 errno=38\n");
    let traced = root.run(platform, &["--trace-syscalls"], "/misbehave", &["enosys"]);
    let out = stdout(&traced);
    assert!(
        out.contains("syscall_1000(0x1, 0x2, 0x3") && out.contains("= -1 ENOSYS"),
        "{out}"
    );
    assert!(
        out.contains("not implemented (ENOSYS): ") && out.contains("syscall_1000 x1"),
        "{out}"
    );
}

fn fork_is_refused_with_a_line_that_names_it(platform: Platform) {
    let misbehave = compile(Path::new("misbehave.c"), Libc::Glibc, &[]);
    let root = Rootfs::new(&format!("fork-{}", platform.name()));
    root.add(&misbehave, "/misbehave");
    let guest = root.run(platform, &[], "/misbehave", &["fork"]);
    assert_eq!(guest.status.code(), Some(3), "{}", everything(&guest));
    let out = stdout(&guest);
    assert!(out.contains("fork = -1 errno=38"), "{out}");
    assert!(out.contains("fork is not supported"), "{out}");
}

fn a_thread_that_spins_forever_meets_the_timeout(platform: Platform) {
    let misbehave = compile(Path::new("misbehave.c"), Libc::Glibc, &[]);
    let root = Rootfs::new(&format!("spin-{}", platform.name()));
    root.add(&misbehave, "/misbehave");
    let guest = root.run(platform, &["--timeout", "3s"], "/misbehave", &["spin"]);
    assert_eq!(guest.status.code(), Some(124), "{}", everything(&guest));
    assert!(stderr(&guest).contains("timeout"), "{}", stderr(&guest));
}

fn programs_that_cannot_run_are_refused_with_one_clear_line(platform: Platform) {
    let root = Rootfs::new(&format!("refused-{}", platform.name()));
    std::fs::write(root.dir.join("notes.txt"), "not a program\n").unwrap();
    // A dynamically linked program without its loader in the root.
    root.add(Path::new("/bin/ls"), "/ls");
    let cases = [
        ("/notes.txt", 123, "not an x86-64 Linux program"),
        (
            "/ls",
            123,
            "ld-linux-x86-64.so.2: not in the root filesystem",
        ),
        (
            "/missing",
            125,
            "/missing is not a file in the root filesystem",
        ),
    ];
    for (program, code, message) in cases {
        let guest = root.run(platform, &[], program, &[]);
        assert_eq!(
            guest.status.code(),
            Some(code),
            "{program}: {}",
            everything(&guest)
        );
        let err = stderr(&guest);
        assert!(err.contains(message), "{program}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{program}: one line: {err}"
        );
    }
}

fn a_missing_library_is_named_by_the_programs_own_loader(platform: Platform) {
    let root = Rootfs::of_host_programs(&format!("nolib-{}", platform.name()), &["/bin/ls"], &[]);
    let libc = std::fs::read_dir(root.dir.join("usr/lib/x86_64-linux-gnu"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name == "libselinux.so.1")
        })
        .expect("ls needs libselinux on Debian");
    std::fs::remove_file(libc).unwrap();
    let guest = root.run(platform, &[], "/bin/ls", &[]);
    let all = everything(&guest);
    assert!(
        all.contains("libselinux.so.1: cannot open shared object file"),
        "{all}"
    );
    // The loader exits 127, which the monitor keeps for its own verdicts: the
    // guest reports 123 and says so.
    assert_eq!(guest.status.code(), Some(123), "{all}");
    assert!(stderr(&guest).contains("status 127"), "{all}");
}

lightvm_testkit::platform_tests!(
    lightvm_vmm::Platform;
    static_hello_behaves_as_on_the_host,
    the_benchs_c_baselines_run_unmodified,
    threads_share_locks_condition_variables_and_thread_locals,
    vector_registers_survive_system_calls_and_thread_switches,
    the_clocks_are_read_in_the_vdso_and_agree_with_the_system_calls,
    a_dynamically_linked_host_program_runs_from_the_root_lightvm_rootfs_made,
    debians_nginx_redis_and_iperf3_start_and_report_their_versions,
    busybox_runs_a_shell_script,
    a_wild_pointer_ends_the_vm_with_the_fault_named,
    an_unknown_system_call_gets_enosys_and_is_counted,
    fork_is_refused_with_a_line_that_names_it,
    a_thread_that_spins_forever_meets_the_timeout,
    programs_that_cannot_run_are_refused_with_one_clear_line,
    a_missing_library_is_named_by_the_programs_own_loader,
);
