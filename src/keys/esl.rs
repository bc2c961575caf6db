//! EFI signature lists (UEFI spec, `EFI_SIGNATURE_LIST`): what the PK,
//! KEK and db variables hold. One list of one X.509 certificate is: the
//! signature type `EFI_CERT_X509_GUID`, the list's size, a header size of
//! 0, the signature's size, then the signature: its owner's GUID and the
//! DER certificate. Integers are little-endian; a GUID's first three
//! fields too.

use std::fmt;
use std::io::Read;

/// `EFI_CERT_X509_GUID`.
pub const CERT_X509: Guid = Guid([
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
]);

/// A GUID in its on-disk byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A random (version 4) GUID.
    pub fn random() -> std::io::Result<Guid> {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        bytes[7] = (bytes[7] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(Guid(bytes))
    }
}

impl fmt::Display for Guid {
    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, the first three fields read
    /// little-endian.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The signature list holding the DER certificate `der`, owned by `owner`.
pub fn x509_list(owner: &Guid, der: &[u8]) -> Vec<u8> {
    let signature_size = 16 + der.len();
    let list_size = 16 + 4 * 3 + signature_size;
    let mut list = Vec::with_capacity(list_size);
    list.extend_from_slice(&CERT_X509.0);
    for field in [list_size, 0, signature_size] {
        list.extend_from_slice(&(field as u32).to_le_bytes());
    }
    list.extend_from_slice(&owner.0);
    list.extend_from_slice(der);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_x509_type_prints_as_the_spec_writes_it() {
        assert_eq!(
            CERT_X509.to_string(),
            "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
        );
    }

    #[test]
    fn a_list_is_header_owner_and_certificate() {
        let owner = Guid([7; 16]);
        let list = x509_list(&owner, b"DER!");
        assert_eq!(list.len(), 28 + 16 + 4);
        assert_eq!(&list[..16], &CERT_X509.0);
        assert_eq!(u32::from_le_bytes(list[16..20].try_into().unwrap()), 48);
        assert_eq!(u32::from_le_bytes(list[20..24].try_into().unwrap()), 0);
        assert_eq!(u32::from_le_bytes(list[24..28].try_into().unwrap()), 20);
        assert_eq!(&list[28..44], &[7; 16]);
        assert_eq!(&list[44..], b"DER!");
    }

    #[test]
    fn random_guids_are_version_4() {
        let guid = Guid::random().unwrap().to_string();
        assert_eq!(guid.len(), 36);
        assert_eq!(&guid[14..15], "4");
        assert!("89ab".contains(&guid[19..20]), "{guid}");
        assert_ne!(Guid::random().unwrap(), Guid::random().unwrap());
    }
}
