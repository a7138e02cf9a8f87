//! A numpy structured-array `.npy` writer for tables: `np.load("summary.npy")["depth"]`.
//! ndarray-npy writes plain arrays only; a table of named, mixed-type columns needs the
//! record dtype, whose format (NEP 1, version 1.0) is a short header and packed records.

use crate::error::{Error, Result};

/// A column of a table: f64, i64, or fixed-width text.
pub enum Column<'a> {
    F64(&'a str, Vec<f64>),
    I64(&'a str, Vec<i64>),
    Text(&'a str, Vec<String>),
}

impl Column<'_> {
    fn len(&self) -> usize {
        match self {
            Column::F64(_, v) => v.len(),
            Column::I64(_, v) => v.len(),
            Column::Text(_, v) => v.len(),
        }
    }
}

/// Serialises columns of equal length as a 1-d structured `.npy` (little-endian; text as
/// `<U{n}` UTF-32, n the longest entry).
pub fn table_npy(cols: &[Column]) -> Result<Vec<u8>> {
    let rows = cols.first().map_or(0, |c| c.len());
    if cols.iter().any(|c| c.len() != rows) {
        return Err(Error::Internal("table columns of unequal length".into()));
    }
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| match c {
            Column::Text(_, v) => v.iter().map(|s| s.chars().count()).max().unwrap_or(1).max(1),
            _ => 0,
        })
        .collect();
    let descr: Vec<String> = cols
        .iter()
        .zip(&widths)
        .map(|(c, w)| match c {
            Column::F64(n, _) => format!("('{n}', '<f8')"),
            Column::I64(n, _) => format!("('{n}', '<i8')"),
            Column::Text(n, _) => format!("('{n}', '<U{w}')"),
        })
        .collect();
    let mut header = format!("{{'descr': [{}], 'fortran_order': False, 'shape': ({rows},), }}", descr.join(", "));
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a
    // multiple of 64 and ended by a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    if header.len() > u16::MAX as usize {
        return Err(Error::Internal("npy header too long".into()));
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for r in 0..rows {
        for (c, w) in cols.iter().zip(&widths) {
            match c {
                Column::F64(_, v) => out.extend_from_slice(&v[r].to_le_bytes()),
                Column::I64(_, v) => out.extend_from_slice(&v[r].to_le_bytes()),
                Column::Text(_, v) => {
                    let mut n = 0;
                    for ch in v[r].chars() {
                        out.extend_from_slice(&(ch as u32).to_le_bytes());
                        n += 1;
                    }
                    for _ in n..*w {
                        out.extend_from_slice(&0u32.to_le_bytes());
                    }
                }
            }
        }
    }
    Ok(out)
}
