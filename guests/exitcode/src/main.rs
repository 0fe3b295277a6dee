//! Exits with the status given on its command line (`--cmdline 7` → 7): tests that
//! the command line reaches the guest and the exit status comes back out.
#![no_std]
#![no_main]

libos::entry!(main);

/// The status when the command line is missing or not a number.
const NO_STATUS_GIVEN: i32 = 3;

fn main() -> i32 {
    let cmdline = libos::cmdline().trim();
    match cmdline.parse::<i32>() {
        Ok(status) => status,
        Err(_) => {
            libos::println!(
                "exitcode: no status in the command line {cmdline:?}, exiting with {NO_STATUS_GIVEN}"
            );
            NO_STATUS_GIVEN
        }
    }
}
