//! File ingest for `kairos replay`: JSON Lines files (`.jsonl`, `.jsonl.gz`), read by one
//! reader thread in a fixed order and dealt to the workers in chunks of lines. `kairos report`
//! reads its inputs line by line with the same [`discover`] and [`read_lines`].
//!
//! Determinism: the result must not depend on the number of workers (contract §3). Each
//! chunk's events enter the dataflow at an epoch computed from the chunks *before* it —
//! the newest `ts` among them, less the allowed lateness — which every worker learns from
//! the shared [`ChunkBoard`]. The epoch of a chunk therefore depends only on the input, not
//! on which worker decoded which chunk or when.
//!
//! Progress: with a [`Progress`] (on the [`ChunkBoard`], or given to [`read_lines_counted`])
//! the reader counts the bytes it reads from the files and the lines, and the board the
//! newest event time published; counting never changes what is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::read::MultiGzDecoder;
use kairos_model::{Millis, Origin};

use crate::decode::{decode_within, Horizon};
use crate::ingest::{DeadLetter, Received, SourcePosition};

use crate::progress::Progress;

/// Lines per chunk: large enough to amortise the hand-off, small enough to spread work.
pub const CHUNK_LINES: usize = 4096;

/// Chunks buffered per worker between the reader and the worker.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Why input files could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path} after line {line}: {source}")]
    ReadAt {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
    #[error("no .jsonl or .jsonl.gz files in {0}")]
    NoEventFiles(PathBuf),
    #[error("{0} is not a .jsonl or .jsonl.gz file")]
    NotEvents(PathBuf),
    #[error("a worker stopped before the input was read")]
    WorkerGone,
}

/// The callers that still speak in one-line messages (`kairos report`) take these as is.
impl From<FilesError> for String {
    fn from(error: FilesError) -> String {
        error.to_string()
    }
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The input files of a replay, in the order they are read.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FilesError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(unreadable(path))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            if found.is_empty() {
                return Err(FilesError::NoEventFiles(path.clone()));
            }
            found.sort();
            files.extend(found);
        } else if is_events_file(path) {
            files.push(path.clone());
        } else {
            return Err(FilesError::NotEvents(path.clone()));
        }
    }
    Ok(files)
}

fn is_events_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), FilesError> {
    let entries = std::fs::read_dir(dir).map_err(unreadable(dir))?;
    for entry in entries {
        let path = entry.map_err(unreadable(dir))?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if is_events_file(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// Up to [`CHUNK_LINES`] consecutive non-blank lines of one file.
#[derive(Debug)]
pub struct Chunk {
    /// Position of the chunk in the whole input (0, 1, 2, …).
    pub index: u64,
    /// Index of the file in the [`discover`] order.
    pub file: u32,
    /// The lines' bytes, back to back, without line terminators.
    data: Vec<u8>,
    /// For each line: its 1-based line number and where it ends in `data`.
    lines: Vec<(u64, usize)>,
}

impl Chunk {
    /// The lines with their 1-based line numbers.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut start = 0;
        self.lines.iter().map(move |&(number, end)| {
            let line = &self.data[start..end];
            start = end;
            (number, line)
        })
    }

    /// Decodes the chunk's lines, in order, handing each to `deliver` as a Kafka partition's
    /// messages are (`names` are the input files in [`discover`] order, for dead letters);
    /// an event stamped beyond `horizon` is a dead letter. Returns the newest event time in
    /// the chunk.
    pub fn decode(&self, names: &[String], horizon: &Horizon, mut deliver: impl FnMut(Received)) -> Option<Millis> {
        let mut newest = None;
        for (line, bytes) in self.lines() {
            let origin = Origin {
                source: self.file,
                position: line,
            };
            match decode_within(bytes, origin, horizon) {
                Ok(event) => {
                    newest = newest.max(Some(event.ts));
                    deliver(Received::Event(event));
                }
                Err(error) => {
                    let source = SourcePosition::File {
                        file: names[self.file as usize].clone(),
                        line,
                    };
                    deliver(Received::Invalid(DeadLetter::new(source, error, bytes), None));
                }
            }
        }
        newest
    }
}

/// Starts the reader thread: chunk `i` goes to worker `i % workers`. The thread ends when
/// the input is read, and then tells `board` how many chunks there were; its result says
/// whether every file could be read to the end. With a progress handle on the board, the
/// reader counts there what it reads, of the files' total size.
pub fn spawn_reader(
    files: Vec<PathBuf>,
    workers: usize,
    board: Arc<ChunkBoard>,
) -> (Vec<Receiver<Chunk>>, JoinHandle<Result<(), FilesError>>) {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers).map(|_| sync_channel(CHUNKS_IN_FLIGHT)).unzip();
    let handle = std::thread::Builder::new()
        .name("kairos-file-reader".into())
        .spawn(move || {
            let mut chunks = 0;
            let progress = board.progress.as_ref();
            if let Some(progress) = progress {
                progress.begin(total_size(&files));
            }
            let result = read_all(&files, &senders, &mut chunks, progress);
            // Also on failure: the workers wait for the end of the input.
            board.close(chunks);
            result
        })
        .expect("spawning the reader thread");
    (receivers, handle)
}

fn read_all(
    files: &[PathBuf],
    senders: &[SyncSender<Chunk>],
    index: &mut u64,
    progress: Option<&Progress>,
) -> Result<(), FilesError> {
    for (file_index, path) in files.iter().enumerate() {
        let mut chunk = new_chunk(*index, file_index);
        read_lines_counted(path, progress, |number, content| {
            chunk.data.extend_from_slice(content);
            chunk.lines.push((number, chunk.data.len()));
            if chunk.lines.len() == CHUNK_LINES {
                let full = std::mem::replace(&mut chunk, new_chunk(*index + 1, file_index));
                send(senders, full)?;
                *index += 1;
            }
            Ok(())
        })?;
        if !chunk.lines.is_empty() {
            send(senders, chunk)?;
            *index += 1;
        }
    }
    Ok(())
}

/// Calls `each` with every non-blank line of a `.jsonl` or `.jsonl.gz` file (decompressed,
/// without its line terminator) and its 1-based line number, in order; stops at the first
/// error, from reading or from `each` (whose error type, `E`, says what reading errors become).
pub fn read_lines<E: From<FilesError>>(path: &Path, each: impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<(), E> {
    read_lines_counted(path, None, each)
}

/// [`read_lines`], counting on `progress` the bytes read from the file (before
/// decompression, so that they compare with the file's size) and the lines handed to `each`.
pub fn read_lines_counted<E: From<FilesError>>(
    path: &Path,
    progress: Option<&Progress>,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let file = File::open(path).map_err(unreadable(path))?;
    let file = CountingReader {
        inner: file,
        progress: progress.cloned(),
    };
    let raw: Box<dyn Read> = if path.extension().is_some_and(|x| x == "gz") {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(1 << 20, raw);
    let mut line = Vec::new();
    let mut number = 0u64;
    // Lines are counted here and added to the shared counter a chunk at a time, not one
    // atomic add per event.
    let mut uncounted = 0u64;
    let count = |uncounted: &mut u64| {
        if let Some(progress) = progress {
            progress.add_events(std::mem::take(uncounted));
        }
    };
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| FilesError::ReadAt {
                path: path.to_path_buf(),
                line: number,
                source,
            })?;
        if read == 0 {
            count(&mut uncounted);
            return Ok(());
        }
        number += 1;
        let content = trim_line(&line);
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        uncounted += 1;
        if uncounted == CHUNK_LINES as u64 {
            count(&mut uncounted);
        }
        each(number, content)?;
    }
}

/// The size of the files together, in bytes (0 for a file whose size cannot be read: it
/// fails when it is opened): the total of a replay's progress.
pub fn total_size(files: &[PathBuf]) -> u64 {
    files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum()
}

/// A reader that counts the bytes read through it as progress done.
struct CountingReader<R> {
    inner: R,
    progress: Option<Progress>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        if let Some(progress) = &self.progress {
            progress.add_done(read as u64);
        }
        Ok(read)
    }
}

fn new_chunk(index: u64, file: usize) -> Chunk {
    Chunk {
        index,
        file: file as u32,
        data: Vec::with_capacity(CHUNK_LINES * 200),
        lines: Vec::with_capacity(CHUNK_LINES),
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn send(senders: &[SyncSender<Chunk>], chunk: Chunk) -> Result<(), FilesError> {
    let worker = (chunk.index % senders.len() as u64) as usize;
    senders[worker].send(chunk).map_err(|_| FilesError::WorkerGone)
}

/// The newest event time of every chunk, published by the worker that decoded it, so that
/// every worker can compute the epoch of its next chunk from the chunks before it.
#[derive(Debug, Default)]
pub struct ChunkBoard {
    state: Mutex<BoardState>,
    /// Where the reader counts what it reads and the board the newest event time.
    progress: Option<Progress>,
}

#[derive(Debug, Default)]
struct BoardState {
    /// Published chunks not yet contiguous with the prefix.
    waiting: BTreeMap<u64, Option<Millis>>,
    /// `before[c]`: the newest `ts` in chunks `0..c`; known for `c ≤ before.len() - 1`.
    before: Vec<Option<Millis>>,
    /// How many chunks the input had, once it is all read.
    total: Option<u64>,
}

impl ChunkBoard {
    /// A board whose reader and workers report their progress on `progress`.
    pub fn reporting_to(progress: Option<Progress>) -> ChunkBoard {
        ChunkBoard {
            progress,
            ..ChunkBoard::default()
        }
    }

    /// Records the newest `ts` of chunk `index` (`None` when it had no valid event).
    pub fn publish(&self, index: u64, newest: Option<Millis>) {
        if let (Some(progress), Some(ts)) = (&self.progress, newest) {
            progress.saw_event_time(ts);
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.before.is_empty() {
            state.before.push(None);
        }
        state.waiting.insert(index, newest);
        loop {
            let next = state.before.len() as u64 - 1;
            let Some(newest) = state.waiting.remove(&next) else {
                break;
            };
            let running = *state.before.last().unwrap_or(&None);
            state.before.push(running.max(newest));
        }
    }

    /// Records that the input had `total` chunks.
    pub fn close(&self, total: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total = Some(total);
    }

    /// The newest `ts` of the whole input, once it is all read and every chunk published:
    /// where event time ends in a replay.
    pub fn newest_overall(&self) -> Option<Option<Millis>> {
        let total = self.state.lock().unwrap_or_else(|p| p.into_inner()).total?;
        self.newest_before(total)
    }

    /// The newest `ts` in every chunk before `index`, once they are all published.
    pub fn newest_before(&self, index: u64) -> Option<Option<Millis>> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if index == 0 {
            return Some(None);
        }
        state.before.get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn board_prefixes_are_independent_of_publication_order() {
        let board = ChunkBoard::default();
        assert_eq!(board.newest_before(0), Some(None));
        board.publish(2, Some(50));
        assert_eq!(board.newest_before(1), None);
        board.publish(0, Some(30));
        assert_eq!(board.newest_before(1), Some(Some(30)));
        assert_eq!(board.newest_before(3), None);
        assert_eq!(board.newest_overall(), None, "not closed yet");
        board.publish(1, None);
        assert_eq!(board.newest_before(2), Some(Some(30)));
        assert_eq!(board.newest_before(3), Some(Some(50)));
        board.close(3);
        assert_eq!(board.newest_overall(), Some(Some(50)));
    }

    #[test]
    fn reads_plain_and_gzip_files_in_chunks_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.jsonl");
        let lines: String = (0..CHUNK_LINES + 3).map(|i| format!("{{\"n\":{i}}}\r\n")).collect();
        std::fs::write(&plain, format!("{lines}\n   \n")).unwrap();
        let gz = dir.path().join("sub").join("b.jsonl.gz");
        std::fs::create_dir(gz.parent().unwrap()).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        encoder.write_all(b"{\"n\":\"gz\"}").unwrap();
        encoder.finish().unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "x").unwrap();

        let files = discover(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, vec![plain.clone(), gz.clone()]);
        let board = Arc::new(ChunkBoard::default());
        let (receivers, reader) = spawn_reader(files, 2, Arc::clone(&board));
        reader.join().unwrap().unwrap();
        let chunks: Vec<Chunk> = receivers.iter().flat_map(|r| r.try_iter()).collect();
        let mut indexes: Vec<u64> = chunks.iter().map(|c| c.index).collect();
        indexes.sort();
        assert_eq!(indexes, vec![0, 1, 2]);
        let last_of_first_file = chunks.iter().find(|c| c.index == 1).unwrap();
        let lines: Vec<(u64, Vec<u8>)> = last_of_first_file.lines().map(|(n, l)| (n, l.to_vec())).collect();
        assert_eq!(
            lines[0],
            (CHUNK_LINES as u64 + 1, format!("{{\"n\":{CHUNK_LINES}}}").into_bytes())
        );
        assert_eq!(lines.len(), 3);
        let gz_chunk = chunks.iter().find(|c| c.index == 2).unwrap();
        assert_eq!(gz_chunk.file, 1);
        assert_eq!(gz_chunk.lines().next().unwrap(), (1, &b"{\"n\":\"gz\"}"[..]));
    }

    #[test]
    fn the_reader_counts_bytes_and_lines_on_the_boards_progress() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.jsonl");
        std::fs::write(&plain, "{\"n\":1}\n\n{\"n\":2}\n").unwrap();
        let gz = dir.path().join("b.jsonl.gz");
        let mut encoder = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        encoder.write_all(b"{\"n\":3}\n").unwrap();
        encoder.finish().unwrap();
        let files = discover(&[dir.path().to_path_buf()]).unwrap();
        let size = total_size(&files);
        assert_eq!(
            size,
            std::fs::metadata(&plain).unwrap().len() + std::fs::metadata(&gz).unwrap().len()
        );

        let progress = Progress::new();
        let board = Arc::new(ChunkBoard::reporting_to(Some(progress.clone())));
        let (receivers, reader) = spawn_reader(files, 1, Arc::clone(&board));
        reader.join().unwrap().unwrap();
        drop(receivers);
        board.publish(0, Some(7_000));
        board.publish(1, None);
        let s = progress.snapshot();
        assert_eq!(
            (s.done, s.total, s.events),
            (size, size, 3),
            "compressed bytes, non-blank lines"
        );
        assert_eq!(s.newest_event, Some(7_000));
    }

    #[test]
    fn unreadable_paths_are_errors() {
        assert!(discover(&[PathBuf::from("/nonexistent/x.jsonl")])
            .unwrap_err()
            .to_string()
            .starts_with("cannot read /nonexistent/x.jsonl"));
        let dir = tempfile::tempdir().unwrap();
        assert!(discover(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string()
            .starts_with("no .jsonl"));
        let txt = dir.path().join("x.txt");
        std::fs::write(&txt, "").unwrap();
        assert!(discover(&[txt])
            .unwrap_err()
            .to_string()
            .ends_with("is not a .jsonl or .jsonl.gz file"));
    }
}
