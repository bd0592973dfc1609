//! A copy-on-write view of a store file for the trial open: redb reads the file, and whatever it
//! writes (a repair, the version row) stays in memory, so judging a damaged file never changes it
//! and a second start sees the same bytes as the first.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use redb::StorageBackend;

/// Granularity of the in-memory copies.
const PAGE: u64 = 4096;

/// The file read-only, with writes kept in memory by page.
#[derive(Debug)]
pub(crate) struct Overlay {
    file: File,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    len: u64,
    /// Bytes at or beyond this offset no longer come from the file (it was shortened in memory).
    file_valid: u64,
    pages: HashMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// A view of `file` (opened for reading) as it is now.
    pub(crate) fn new(file: File) -> io::Result<Overlay> {
        let len = file.metadata()?.len();
        Ok(Overlay {
            file,
            state: Mutex::new(State {
                len,
                file_valid: len,
                pages: HashMap::new(),
            }),
        })
    }
}

impl State {
    /// Page `index` as the view holds it: the in-memory copy, or the file's bytes (zeros where
    /// the file has none).
    fn load(&self, file: &File, index: u64) -> io::Result<Box<[u8]>> {
        if let Some(p) = self.pages.get(&index) {
            return Ok(p.clone());
        }
        let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
        let start = index * PAGE;
        let end = (start + PAGE).min(self.file_valid);
        if end > start {
            file.read_exact_at(&mut buf[..(end - start) as usize], start)?;
        }
        Ok(buf)
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state.lock().expect("overlay lock").len)
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        let st = self.state.lock().expect("overlay lock");
        let end = offset
            .checked_add(len as u64)
            .filter(|e| *e <= st.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let take = ((PAGE as usize - within) as u64).min(end - at) as usize;
            match st.pages.get(&index) {
                Some(p) => out.extend_from_slice(&p[within..within + take]),
                None => {
                    let mut buf = vec![0u8; take];
                    let from_file = st.file_valid.saturating_sub(at).min(take as u64) as usize;
                    if from_file > 0 {
                        self.file.read_exact_at(&mut buf[..from_file], at)?;
                    }
                    out.extend_from_slice(&buf);
                }
            }
            at += take as u64;
        }
        Ok(out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut st = self.state.lock().expect("overlay lock");
        if len < st.len {
            // What lies beyond the new end reads as zeros if the view grows again.
            st.file_valid = st.file_valid.min(len);
            st.pages.retain(|i, _| i * PAGE < len);
            let last = len / PAGE;
            let cut = (len % PAGE) as usize;
            if let Some(p) = st.pages.get_mut(&last) {
                p[cut..].fill(0);
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut st = self.state.lock().expect("overlay lock");
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let take = ((PAGE as usize - within) as u64).min(end - at) as usize;
            let mut page = st.load(&self.file, index)?;
            let from = (at - offset) as usize;
            page[within..within + take].copy_from_slice(&data[from..from + take]);
            st.pages.insert(index, page);
            at += take as u64;
        }
        st.len = st.len.max(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_memory_and_reads_merge() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &original).unwrap();
        let o = Overlay::new(File::open(&p).unwrap()).unwrap();
        o.write(4090, &[1; 20]).unwrap();
        let r = o.read(4080, 40).unwrap();
        assert_eq!(&r[..10], &original[4080..4090]);
        assert_eq!(&r[10..30], &[1; 20]);
        assert_eq!(&r[30..], &original[4110..4120]);
        o.set_len(5000).unwrap();
        o.set_len(12_000).unwrap();
        assert_eq!(o.read(4999, 2).unwrap(), vec![original[4999], 0]);
        assert_eq!(o.read(11_990, 10).unwrap(), vec![0; 10]);
        assert!(o.read(11_995, 10).is_err());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            original,
            "the file is unchanged"
        );
    }
}
