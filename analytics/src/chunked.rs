//! A FIFO queue stored as fixed-size chunks behind `Arc`s, so a copy of it costs one `Arc`
//! bump per chunk instead of a copy of every element.
//!
//! The dedup window and the pending queue can hold millions of entries. A snapshot or a
//! digest needs them as they were at one applied index, while `apply` goes on changing
//! them. Cloning this queue is O(len / CHUNK); the clone and the original then share their
//! chunks, and the writer copies only the one chunk it appends to (once, on its first write
//! after the clone, through `Arc::make_mut`). Pops from the front never write a chunk: they
//! move a head offset and drop a chunk once all of it has been popped.
//!
//! Every chunk but the last is full, so the element at logical position `i` lives at
//! physical position `head + i`, which makes random access and binary search O(1)/O(log n).
//! It serializes as a plain sequence, exactly as a `VecDeque` of the same elements does.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Elements per chunk: big enough that a million-element queue is a thousand `Arc`s, small
/// enough that the copy `apply` makes of the chunk it appends to after a snapshot is cheap.
pub(crate) const CHUNK: usize = 1024;

#[derive(Clone, Debug)]
pub(crate) struct ChunkedQueue<T> {
    chunks: VecDeque<Arc<Vec<T>>>,
    /// Elements of the front chunk already popped (still stored, possibly shared).
    head: usize,
    len: usize,
}

impl<T> Default for ChunkedQueue<T> {
    fn default() -> Self {
        ChunkedQueue {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }
}

impl<T: Clone> ChunkedQueue<T> {
    pub fn push_back(&mut self, value: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
    }
}

impl<T> ChunkedQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The element at logical position `i` (0 = front).
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let at = self.head + i;
        self.chunks.get(at / CHUNK).and_then(|c| c.get(at % CHUNK))
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn back(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    /// Removes the front element (without touching the chunk that holds it, which may be
    /// shared with a copy).
    pub fn drop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.head += 1;
        if self.len == 0 {
            self.chunks.clear();
            self.head = 0;
        } else if self.head == CHUNK {
            self.chunks.pop_front();
            self.head = 0;
        }
    }

    /// The number of leading elements for which `pred` holds, given that it holds for a
    /// prefix of the queue and not after (as `slice::partition_point`).
    pub fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.get(mid) {
                Some(value) if pred(value) => low = mid + 1,
                _ => high = mid,
            }
        }
        low
    }

    /// The elements from logical position `start` on, front to back.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> + '_ {
        let start = start.min(self.len);
        let at = self.head + start;
        let (first, offset) = (at / CHUNK, at % CHUNK);
        self.chunks
            .iter()
            .skip(first)
            .enumerate()
            .flat_map(move |(n, chunk)| {
                let skip = if n == 0 { offset } else { 0 };
                chunk.get(skip..).unwrap_or_default().iter()
            })
            .take(self.len - start)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter_from(0)
    }

    /// Chunks held (what a copy costs, in `Arc` bumps).
    #[cfg(test)]
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

impl<T: PartialEq> PartialEq for ChunkedQueue<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for ChunkedQueue<T> {}

impl<T: Clone> FromIterator<T> for ChunkedQueue<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut queue = ChunkedQueue::default();
        for value in iter {
            queue.push_back(value);
        }
        queue
    }
}

/// A sequence with a length, as bincode writes a `VecDeque`.
impl<T: Serialize> Serialize for ChunkedQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for value in self.iter() {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for ChunkedQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QueueVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for QueueVisitor<T> {
            type Value = ChunkedQueue<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Chunk by chunk as elements arrive: a corrupt declared length never
                // becomes an allocation.
                let mut queue = ChunkedQueue::default();
                while let Some(value) = seq.next_element()? {
                    queue.push_back(value);
                }
                Ok(queue)
            }
        }
        deserializer.deserialize_seq(QueueVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    #[test]
    fn behaves_like_a_vecdeque_across_chunk_boundaries() {
        let mut queue = ChunkedQueue::default();
        let mut model = VecDeque::new();
        for round in 0..5u64 {
            for i in 0..(CHUNK as u64 + 17) {
                queue.push_back(round * 10_000 + i);
                model.push_back(round * 10_000 + i);
            }
            for _ in 0..(CHUNK / 2 + round as usize * 100) {
                queue.drop_front();
                model.pop_front();
            }
            assert_eq!(queue.len(), model.len());
            assert!(queue.iter().eq(model.iter()));
            assert_eq!(queue.front(), model.front());
            assert_eq!(queue.back(), model.back());
            for start in [0, 1, CHUNK - 1, CHUNK, model.len() - 1, model.len() + 3] {
                assert!(queue
                    .iter_from(start)
                    .eq(model.range(start.min(model.len())..)));
            }
            let cut = model.len() / 3;
            let threshold = model[cut];
            assert_eq!(
                queue.partition_point(|&v| v < threshold),
                model.partition_point(|&v| v < threshold)
            );
            assert_eq!(encode(&queue), encode(&model), "same bytes as a VecDeque");
        }
        while !model.is_empty() {
            queue.drop_front();
            model.pop_front();
        }
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.chunks(), 0);
        queue.drop_front();
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_copy_shares_chunks_and_does_not_see_later_writes() {
        let mut queue: ChunkedQueue<u32> = (0..(3 * CHUNK as u32)).collect();
        let frozen = queue.clone();
        queue.push_back(7);
        queue.drop_front();
        assert_eq!(frozen.len(), 3 * CHUNK);
        assert_eq!(frozen.front(), Some(&0));
        assert_eq!(frozen.back(), Some(&(3 * CHUNK as u32 - 1)));
        assert_eq!(queue.back(), Some(&7));
        // The full chunks are shared, not copied.
        assert!(Arc::ptr_eq(&queue.chunks[1], &frozen.chunks[1]));
    }

    #[test]
    fn decodes_what_it_encodes() {
        let queue: ChunkedQueue<(i64, String)> =
            (0..2_500).map(|i| (i, format!("id-{i}"))).collect();
        let bytes = encode(&queue);
        let (back, used): (ChunkedQueue<(i64, String)>, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, queue);
    }
}
