//! Run seeds through MD5, as in the Davis & Frank code: seed i is the last 8 hex digits of
//! md5 of the decimal string of i, read as a u32.

use md5::{Digest, Md5};

/// The seed of run `index` (1-based in specs): the low 32 bits of md5(`index` in decimal).
///
/// ```
/// assert_eq!(bnlab_train::run_seed(1), 0x6f75849b);
/// ```
pub fn run_seed(index: u32) -> u32 {
    let digest = Md5::digest(index.to_string().as_bytes());
    u32::from_be_bytes([digest[12], digest[13], digest[14], digest[15]])
}
