//! `--net` and `--disk` values, for both guest kinds: a unikernel's NIC and disk and
//! a Linux guest's virtio-net and virtio-blk devices are configured alike.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// `--net tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// The host tap interface.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
}

/// `--disk PATH[,ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image file.
    pub path: PathBuf,
    /// Refuse the guest's writes.
    pub read_only: bool,
}

/// A `--net` or `--disk` value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceSyntax(String);

/// The MAC address the `index`th NIC gets when `--net` names none: locally
/// administered, unicast, distinct per device.
pub fn default_mac(index: usize) -> [u8; 6] {
    [0x06, 0x00, 0xac, 0x10, 0x00, (index as u8).wrapping_add(2)]
}

impl NetConfig {
    /// Parses the `index`th `--net` value (the index only picks the default MAC).
    pub fn parse(text: &str, index: usize) -> Result<Self, DeviceSyntax> {
        let usage = "expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX]";
        let mut tap = None;
        let mut mac = default_mac(index);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("tap", name)) if !name.is_empty() && name.len() <= super::tap::IFNAME_MAX => {
                    tap = Some(name.to_owned());
                }
                Some(("mac", text)) => mac = parse_mac(text)?,
                _ => return Err(DeviceSyntax(format!("--net {text:?}: {usage}"))),
            }
        }
        let tap = tap.ok_or_else(|| DeviceSyntax(format!("--net {text:?}: {usage}")))?;
        Ok(Self { tap, mac })
    }
}

impl FromStr for NetConfig {
    type Err = DeviceSyntax;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text, 0)
    }
}

impl fmt::Display for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mac;
        write!(
            f,
            "tap={},mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            self.tap, m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6], DeviceSyntax> {
    let bad = || {
        DeviceSyntax(format!(
            "MAC address {text:?}: expected six hex bytes like 06:00:ac:10:00:02"
        ))
    };
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(DeviceSyntax(format!(
            "MAC address {text}: a NIC needs a unicast address (first byte even, not all zero)"
        )));
    }
    Ok(mac)
}

impl DiskConfig {
    /// Parses a `--disk` value.
    pub fn parse(text: &str) -> Result<Self, DeviceSyntax> {
        let (path, read_only) = match text.rsplit_once(',') {
            Some((path, "ro")) => (path, true),
            Some((path, "rw")) => (path, false),
            Some((_, other)) => {
                return Err(DeviceSyntax(format!(
                    "--disk {text:?}: unknown option {other:?}; expected PATH[,ro]"
                )))
            }
            None => (text, false),
        };
        if path.is_empty() {
            return Err(DeviceSyntax(format!("--disk {text:?}: expected PATH[,ro]")));
        }
        Ok(Self {
            path: path.into(),
            read_only,
        })
    }
}

impl FromStr for DiskConfig {
    type Err = DeviceSyntax;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_options_parse() {
        let net: NetConfig = "tap=tap0".parse().unwrap();
        assert_eq!(net.tap, "tap0");
        assert_eq!(net.mac, default_mac(0));
        let net: NetConfig = "tap=lvm1,mac=02:00:00:aa:bb:cc".parse().unwrap();
        assert_eq!(net.mac, [2, 0, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(net.to_string(), "tap=lvm1,mac=02:00:00:aa:bb:cc");
        for bad in [
            "",
            "tap=",
            "mac=02:00:00:00:00:01",
            "tap=x,mac=01:00:00:00:00:01",
            "tap=x,mac=02:00:00:00:00",
            "tap=x,mac=02:00:00:00:00:00:00",
            "tap=x,speed=10",
            "tap=waytoolonginterfacename",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disk_options_parse() {
        let disk: DiskConfig = "/tmp/a.img".parse().unwrap();
        assert!(!disk.read_only);
        let disk: DiskConfig = "/tmp/a,b.img,ro".parse().unwrap();
        assert_eq!(disk.path, PathBuf::from("/tmp/a,b.img"));
        assert!(disk.read_only);
        assert!(",ro".parse::<DiskConfig>().is_err());
        assert!("/x,sync".parse::<DiskConfig>().is_err());
    }
}
