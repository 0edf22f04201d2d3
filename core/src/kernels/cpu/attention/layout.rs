//! The sizes of one attention call and how its examples split into products: one per head,
//! or one for all heads when the keys and values are shared.

use dfdx::prelude::*;

use super::PARALLEL_MIN_MACS;
use crate::kernels::cpu::{recycled, Buffer};
use crate::kernels::gemm::{Threads, View};
use crate::kernels::generic::HeadDims;
use crate::kernels::AttentionSpec;

/// The sizes of a call, the row widths of its packed tensors, and how it runs.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub heads: usize,
    pub nq: usize,
    pub nk: usize,
    pub dk: usize,
    pub dv: usize,
    pub shared: bool,
    pub gate: bool,
    /// Row widths of q, k, v and the output.
    pub wq: usize,
    pub wk: usize,
    pub wv: usize,
    pub wo: usize,
    /// Whether the examples run on rayon's pool (each GEMM then on one thread).
    pub parallel: bool,
    /// The threads of each GEMM.
    pub threads: Threads,
}

impl Layout {
    pub fn new(dims: &HeadDims, batch: usize, nq: usize, nk: usize) -> Self {
        let (heads, dk, dv) = (dims.heads, dims.dk, dims.dv);
        let kv_heads = if dims.shared { 1 } else { heads };
        let macs = batch * heads * nq * nk * (dk + dv);
        let parallel = batch > 1 && rayon::current_num_threads() > 1 && macs >= PARALLEL_MIN_MACS;
        Self {
            heads,
            nq,
            nk,
            dk,
            dv,
            shared: dims.shared,
            gate: dims.gate,
            wq: heads * dk,
            wk: kv_heads * dk,
            wv: kv_heads * dv,
            wo: heads * dims.d_out(),
            parallel,
            threads: if parallel {
                Threads::One
            } else {
                Threads::BySize
            },
        }
    }

    /// A head's output width.
    pub fn d_out(&self) -> usize {
        if self.gate {
            self.dk
        } else {
            self.dv
        }
    }

    /// A product's rows for the first `queries` queries (they come first in either layout).
    pub fn rows_of(&self, queries: usize) -> usize {
        if self.shared {
            queries * self.heads
        } else {
            queries
        }
    }

    /// The query of a product's row `r`.
    pub fn query_of(&self, r: usize) -> usize {
        if self.shared {
            r / self.heads
        } else {
            r
        }
    }

    /// Products per example.
    pub fn products(&self) -> usize {
        if self.shared {
            1
        } else {
            self.heads
        }
    }

    /// Rows (queries, or (query, head) pairs) per product.
    pub fn rows(&self) -> usize {
        if self.shared {
            self.nq * self.heads
        } else {
            self.nq
        }
    }

    /// The attention weights of one example.
    pub fn example_weights(&self) -> usize {
        self.heads * self.nq * self.nk
    }

    /// Where product `p`'s rows start in an example's packed rows `d` wide per head (the
    /// queries, or the output), and how far apart they are.
    pub fn block(&self, p: usize, d: usize) -> (usize, usize) {
        if self.shared {
            (0, d)
        } else {
            (p * d, self.heads * d)
        }
    }

    /// Product `p`'s queries (`rows × dk`) in one example's `q`, or their transpose.
    pub fn q<'a>(&self, q: &'a [f32], p: usize, transposed: bool) -> View<'a> {
        let (start, rs) = self.block(p, self.dk);
        View::strided(&q[start..], rs, transposed)
    }

    /// The first row of a product that sees key `j` under a causal mask.
    pub fn first_row_seeing(&self, j: usize) -> usize {
        if self.shared {
            j * self.heads
        } else {
            j
        }
    }

    /// Product `p`'s keys (`nk × dk`), or their transpose.
    pub fn k<'a>(&self, k: &'a [f32], p: usize, transposed: bool) -> View<'a> {
        View::strided(&k[p * self.dk..], self.wk, transposed)
    }

    /// Product `p`'s values (`nk × dv`), or their transpose.
    pub fn v<'a>(&self, v: &'a [f32], p: usize, transposed: bool) -> View<'a> {
        View::strided(&v[p * self.dv..], self.wv, transposed)
    }

    /// The weights `(B, heads, Q, K)` from the products' scores, kept `(K, rows)`.
    pub fn weights_by_head(&self, dev: &Cpu, attn: &Buffer) -> Buffer {
        let mut w = recycled(dev, attn.len());
        let (nh, nq, nk, rows) = (self.heads, self.nq, self.nk, self.rows());
        for (i, column) in attn.chunks_exact(rows.max(1)).enumerate() {
            // column i: example e, product p, key j
            let (e, p, j) = (i / (self.products() * nk), i / nk % self.products(), i % nk);
            for (r, &a) in column.iter().enumerate() {
                let (h, query) = if self.shared {
                    (r % nh, r / nh)
                } else {
                    (p, r)
                };
                w[((e * nh + h) * nq + query) * nk + j] = a;
            }
        }
        w
    }
}

/// How much of each example the products read: the trailing keys hidden from every query and
/// the trailing queries whose outputs nobody reads are left out.
pub(super) struct Extents {
    /// Per example, the keys read: all up to the last visible one, or every key when all are
    /// hidden (each query then gets NaN weights, as in PyTorch).
    pub keys: Vec<usize>,
    /// Per example, the queries computed: all up to the last one read (every query when the
    /// weights are wanted: they are returned for all).
    pub queries: Vec<usize>,
    /// The `queries` flags, kept when some query before the last one computed is not read:
    /// its output row is zeroed and its gradient ignored.
    pub gaps: Option<Vec<bool>>,
}

impl Extents {
    pub fn new(l: &Layout, batch: usize, spec: &AttentionSpec) -> Self {
        let (nq, nk) = (l.nq, l.nk);
        let keys = (0..batch)
            .map(|e| {
                spec.keep
                    .map_or(nk, |keep| trimmed(&keep[e * nk..(e + 1) * nk], nk))
            })
            .collect();
        let queries: Vec<usize> = (0..batch)
            .map(|e| match spec.queries {
                Some(read) if !spec.want_weights => trimmed(&read[e * nq..(e + 1) * nq], 0),
                _ => nq,
            })
            .collect();
        let gaps = spec
            .queries
            .filter(|read| (0..batch).any(|e| read[e * nq..e * nq + queries[e]].contains(&false)));
        Self {
            keys,
            queries,
            gaps: gaps.map(<[bool]>::to_vec),
        }
    }

    /// Whether example `e`'s query `query` is computed but not read.
    pub fn unread(&self, e: usize, query: usize, nq: usize) -> bool {
        self.gaps.as_ref().is_some_and(|read| !read[e * nq + query])
    }
}

/// The length of `flags` up to its last true one, `none` when all are false.
fn trimmed(flags: &[bool], none: usize) -> usize {
    flags.iter().rposition(|&f| f).map_or(none, |last| last + 1)
}
