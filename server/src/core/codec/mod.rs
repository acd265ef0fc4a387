//! A compact, exact, versioned binary codec for the core's types, so a service's [`Ledger`]
//! can live outside this process (a Redis module keeps it as a native value, through RDB
//! persistence and replication) and calls and answers can cross to it and back.
//!
//! The format: integers as LEB128 varints (minimal, never overlong), nonces as 8 little-endian
//! bytes, byte strings and sequences behind a varint length, one tag byte for every enum and
//! `Option`. [`to_bytes`] writes [`FORMAT_VERSION`] first and [`from_bytes`] refuses any other
//! version and any trailing byte. Decoding takes untrusted bytes: it never panics, checks every
//! length against the bytes left before allocating, and answers a [`CodecError`]. Encoding is
//! deterministic: equal values give equal bytes.
//!
//! [`Ledger`]: super::Ledger

mod answer;
mod report;
mod spec;

#[cfg(test)]
mod ledger_tests;
#[cfg(test)]
mod tests;

/// The version byte [`to_bytes`] writes first; [`from_bytes`] decodes only this one.
pub const FORMAT_VERSION: u8 = 1;

/// Preallocated at most this many bytes of a sequence's elements before they are decoded: the
/// rest grows with what the input really holds.
const MAX_PREALLOC: usize = 64 * 1024;

/// Why bytes do not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ends inside a value.
    #[error("truncated input")]
    Truncated,
    /// An enum, `Option` or flags byte holds a tag it does not have.
    #[error("bad {what} tag {tag}")]
    BadTag {
        /// What was being decoded.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A length names more elements or bytes than the input has left.
    #[error("length beyond the input")]
    TooLong,
    /// Bytes follow the value.
    #[error("trailing bytes after the value")]
    Trailing,
    /// The leading version byte is not [`FORMAT_VERSION`].
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// A value that is well formed but not one the type can hold.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A value that writes itself to bytes.
pub trait Encode {
    /// Appends the value's encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
}

/// A value that reads itself from bytes written by its [`Encode`].
pub trait Decode: Sized {
    /// Reads one value, leaving `r` after it.
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError>;
}

/// `FORMAT_VERSION` followed by `value`.
pub fn to_bytes<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    value.encode(&mut out);
    out
}

/// The value `bytes` hold: checks the version byte and that nothing follows the value.
pub fn from_bytes<T: Decode>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut r = Reader::new(bytes);
    match r.u8()? {
        FORMAT_VERSION => {}
        other => return Err(CodecError::UnknownVersion(other)),
    }
    let value = T::decode(&mut r)?;
    if !r.is_empty() {
        return Err(CodecError::Trailing);
    }
    Ok(value)
}

/// Writing primitives, on the output buffer.
pub trait Writer {
    /// One byte.
    fn put_u8(&mut self, v: u8);
    /// Eight bytes, little-endian (random numbers such as nonces, which a varint would lengthen).
    fn put_u64(&mut self, v: u64);
    /// A LEB128 varint.
    fn put_varint(&mut self, v: u64);
    /// A LEB128 varint of a 128-bit number (running totals).
    fn put_varint128(&mut self, v: u128);
    /// A length, then the bytes.
    fn put_bytes(&mut self, v: &[u8]);
    /// A length, then the UTF-8 bytes.
    fn put_str(&mut self, v: &str);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }

    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_varint(&mut self, v: u64) {
        self.put_varint128(u128::from(v));
    }

    fn put_varint128(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    fn put_bytes(&mut self, v: &[u8]) {
        self.put_varint(v.len() as u64);
        self.extend_from_slice(v);
    }

    fn put_str(&mut self, v: &str) {
        self.put_bytes(v.as_bytes());
    }
}

/// Reads values from a byte slice, front to back.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return Err(CodecError::Truncated);
        }
        let taken = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(taken)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let [b] = self.take(1)? else {
            return Err(CodecError::Truncated);
        };
        Ok(*b)
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut le = [0; 8];
        le.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(le))
    }

    /// A tag below `count`, for `what`.
    pub fn tag(&mut self, what: &'static str, count: u8) -> Result<u8, CodecError> {
        match self.u8()? {
            tag if tag < count => Ok(tag),
            tag => Err(CodecError::BadTag { what, tag }),
        }
    }

    /// A minimal LEB128 varint of at most `bits` bits.
    fn varint_bits(&mut self, bits: u32) -> Result<u128, CodecError> {
        let mut v = 0u128;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            let low = u128::from(b & 0x7f);
            // The bits this byte adds must fit in `bits`.
            if shift >= bits || (bits - shift < 7 && low >> (bits - shift) != 0) {
                return Err(CodecError::Invalid("varint overflow"));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(CodecError::Invalid("overlong varint"));
                }
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// A varint of at most 64 bits.
    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let v = self.varint_bits(64)?;
        u64::try_from(v).map_err(|_| CodecError::Invalid("varint overflow"))
    }

    /// A varint of at most 128 bits.
    pub fn varint128(&mut self) -> Result<u128, CodecError> {
        self.varint_bits(128)
    }

    /// A varint that must fit `T` (a `u32`, `u16`, `usize`, …).
    pub fn varint_as<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, CodecError> {
        T::try_from(self.varint()?).map_err(|_| CodecError::Invalid(what))
    }

    /// A count of elements that take at least a byte each: at most the bytes left.
    pub fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(CodecError::TooLong),
        }
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.count()?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError::Invalid("utf-8"))
    }

    /// A sequence: a count, then that many `T`.
    pub fn seq<T: Decode>(&mut self) -> Result<Vec<T>, CodecError> {
        let n = self.count()?;
        let mut items = Vec::with_capacity(n.min(MAX_PREALLOC / size_of::<T>().max(1)));
        for _ in 0..n {
            items.push(T::decode(self)?);
        }
        Ok(items)
    }
}

macro_rules! varint_codec {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.put_varint(*self as u64);
            }
        }

        impl Decode for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                r.varint_as(stringify!($t))
            }
        }
    )*};
}

varint_codec!(u16, u32, u64, usize);

impl Encode for u8 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(*self);
    }
}

impl Decode for u8 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.u8()
    }
}

impl Encode for u128 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint128(*self);
    }
}

impl Decode for u128 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.varint128()
    }
}

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(u8::from(*self));
    }
}

impl Decode for bool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(r.tag("bool", 2)? == 1)
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out);
    }
}

impl Encode for str {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(self);
    }
}

impl Encode for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(self);
    }
}

impl Decode for String {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.str().map(str::to_owned)
    }
}

impl Encode for Box<str> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(self);
    }
}

impl Decode for Box<str> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.str().map(Box::from)
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.put_u8(0),
            Some(v) => {
                out.put_u8(1);
                v.encode(out);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.tag("option", 2)? {
            0 => Ok(None),
            _ => T::decode(r).map(Some),
        }
    }
}

impl<T: Encode, E: Encode> Encode for Result<T, E> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Ok(v) => {
                out.put_u8(0);
                v.encode(out);
            }
            Err(e) => {
                out.put_u8(1);
                e.encode(out);
            }
        }
    }
}

impl<T: Decode, E: Decode> Decode for Result<T, E> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.tag("result", 2)? {
            0 => T::decode(r).map(Ok),
            _ => E::decode(r).map(Err),
        }
    }
}

impl<T: Encode> Encode for [T] {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_varint(self.len() as u64);
        for v in self {
            v.encode(out);
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.as_slice().encode(out);
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.seq()
    }
}

impl<T: Encode, const N: usize> Encode for [T; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self {
            v.encode(out);
        }
    }
}

impl<T: Decode, const N: usize> Decode for [T; N] {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let mut items = Vec::with_capacity(N);
        for _ in 0..N {
            items.push(T::decode(r)?);
        }
        items
            .try_into()
            .map_err(|_| CodecError::Invalid("array length"))
    }
}

macro_rules! tuple_codec {
    ($($name:ident),*) => {
        impl<$($name: Encode),*> Encode for ($($name,)*) {
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)*) = self;
                $($name.encode(out);)*
            }
        }

        impl<$($name: Decode),*> Decode for ($($name,)*) {
            fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                Ok(($($name::decode(r)?,)*))
            }
        }
    };
}

tuple_codec!(A, B);
tuple_codec!(A, B, C);
