//! [`LazyCells`]: one write-once cell per list member, for what is computed on the first
//! request that needs it (decision texts, decoded pinned keys).

use std::sync::OnceLock;

/// Cells per page of [`LazyCells`].
pub const CELLS_PER_PAGE: usize = 256;

/// `len` write-once cells in pages of [`CELLS_PER_PAGE`], each page allocated when one of its
/// cells is first asked for. Building it allocates one slot per page, not a cell per member:
/// a reload of a 100,000-member list would otherwise write megabytes of fresh memory for cells
/// that only the members actually seen ever fill (`docs/benchmarks.md`).
#[derive(Debug, Clone)]
pub struct LazyCells<T> {
    pages: Vec<OnceLock<Box<[OnceLock<T>]>>>,
}

impl<T> LazyCells<T> {
    /// Cells for `len` members, all empty.
    pub fn new(len: usize) -> LazyCells<T> {
        LazyCells {
            pages: empty(len.div_ceil(CELLS_PER_PAGE)),
        }
    }

    /// The cell of member `index`.
    ///
    /// # Panics
    /// When `index` is not below the `len` the cells were made for (rounded up to a page).
    pub fn cell(&self, index: usize) -> &OnceLock<T> {
        let page = self.pages[index / CELLS_PER_PAGE].get_or_init(|| empty(CELLS_PER_PAGE));
        &page[index % CELLS_PER_PAGE]
    }

    /// How many pages have been allocated so far.
    #[cfg(test)]
    fn pages_in_use(&self) -> usize {
        self.pages
            .iter()
            .filter(|page| page.get().is_some())
            .count()
    }
}

/// `count` empty cells.
fn empty<T, C: FromIterator<OnceLock<T>>>(count: usize) -> C {
    std::iter::repeat_with(OnceLock::new).take(count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_allocated_on_first_use_and_cells_keep_their_values() {
        let cells: LazyCells<String> = LazyCells::new(2 * CELLS_PER_PAGE + 3);
        assert_eq!(cells.pages_in_use(), 0);
        assert_eq!(
            cells
                .cell(CELLS_PER_PAGE + 1)
                .get_or_init(|| "a".to_owned()),
            "a"
        );
        assert_eq!(cells.pages_in_use(), 1);
        // The value stays; a second initialiser is not run.
        assert_eq!(
            cells
                .cell(CELLS_PER_PAGE + 1)
                .get_or_init(|| "b".to_owned()),
            "a"
        );
        // Neighbours and the last cell are separate and empty.
        for index in [CELLS_PER_PAGE, CELLS_PER_PAGE + 2, 2 * CELLS_PER_PAGE + 2] {
            assert!(cells.cell(index).get().is_none(), "{index}");
        }
        assert_eq!(cells.pages_in_use(), 2);
    }

    #[test]
    #[should_panic(expected = "index out of bounds")]
    fn an_index_past_the_last_page_panics() {
        let cells: LazyCells<u8> = LazyCells::new(CELLS_PER_PAGE);
        cells.cell(CELLS_PER_PAGE);
    }
}
