//! Tar streams built byte by byte, including what `tar::Builder` refuses
//! to write (`..`, absolute names, links out of the root).

use tar::{EntryType, Header};

/// Builds tar streams byte by byte, including what `tar::Builder` refuses.
#[derive(Default)]
pub struct Evil {
    out: Vec<u8>,
}

impl Evil {
    pub fn header(kind: EntryType, path: &[u8], size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len().min(100)].copy_from_slice(&path[..path.len().min(100)]);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn push(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_mode(path, data, 0o644)
    }

    pub fn file_mode(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let h = Self::header(EntryType::Regular, path.as_bytes(), data.len() as u64, mode);
        self.push(h, data)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        assert!(path.len() <= 100, "use a GNU long name for {path}");
        let h = Self::header(EntryType::Directory, path.as_bytes(), 0, mode);
        self.push(h, &[])
    }

    pub fn link(&mut self, kind: EntryType, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, path.as_bytes(), 0, 0o777);
        let t = target.as_bytes();
        h.as_gnu_mut().unwrap().linkname[..t.len()].copy_from_slice(t);
        self.push(h, &[])
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(EntryType::Symlink, path, target)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(EntryType::Link, path, target)
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut len = body.len() + 2;
            while format!("{len} ").len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} ").as_bytes());
            data.extend_from_slice(&body);
        }
        let h = Self::header(
            EntryType::XHeader,
            b"././@PaxHeader",
            data.len() as u64,
            0o644,
        );
        self.push(h, &data)
    }

    pub fn gnu_long(&mut self, kind: EntryType, value: &[u8]) -> &mut Self {
        let data = [value, b"\0"].concat();
        let h = Self::header(kind, b"././@LongLink", data.len() as u64, 0o644);
        self.push(h, &data)
    }

    pub fn device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(EntryType::Char, path.as_bytes(), 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, &[])
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}
