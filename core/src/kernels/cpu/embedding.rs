//! Fused embedding lookup: the table's rows copied out in one pass over the output; the
//! backward pass adds each row's gradient straight into its row of the table's gradient,
//! except the frozen id's (torch's `padding_idx`). (The generic composition gathers, copies the
//! rows once more and chooses between the two copies, with a backward pass for each.)

use dfdx::prelude::*;
use dfdx::shapes::Dim;
use rayon::prelude::*;

use super::{host_values, into_tensor, recycled, PARALLEL_MIN_ELEMENTS};
use crate::kernels::generic::check_embedding_ids;
use crate::kernels::Tr;

/// See [`crate::kernels::Kernels::embedding`].
pub(crate) fn forward<V: Dim, N: Dim>(
    table: Tr<(V, N), f32, Cpu>,
    ids: &[usize],
    frozen: Option<usize>,
) -> Tr<(usize, N), f32, Cpu> {
    let (vocab, n) = *table.shape();
    let width = n.size();
    check_embedding_ids(ids, vocab.size());
    let (table, tape) = table.reshape_like(&(vocab.size() * width,)).split_tape();
    let values = host_values(&table);
    let dev = table.device().clone();
    let mut out = recycled(&dev, ids.len() * width);
    if width > 0 {
        let copy = |(row, &id): (&mut [f32], &usize)| {
            row.copy_from_slice(&values[id * width..(id + 1) * width]);
        };
        if out.len() >= PARALLEL_MIN_ELEMENTS {
            out.par_chunks_exact_mut(width).zip(ids).for_each(copy);
        } else {
            out.chunks_exact_mut(width).zip(ids).for_each(copy);
        }
    }
    let out = into_tensor(&dev, out, (ids.len(), n));
    let (out_ghost, table_ghost) = (out.ghost(), table.ghost());
    let ids = ids.to_vec();
    let mut tape = tape;
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let g = take_grad!(grads, &out_ghost);
        let gt = grads.get_or_alloc_mut(&table_ghost)?;
        if width > 0 {
            // One id may come back many times: the rows are added in order, on one thread.
            for (row, &id) in g.chunks_exact(width).zip(&ids) {
                if Some(id) != frozen {
                    let dst = &mut gt[id * width..(id + 1) * width];
                    dst.iter_mut().zip(row).for_each(|(d, g)| *d += g);
                }
            }
        }
        put_grad!(grads, &out_ghost, g);
        Ok(())
    });
    out.put_tape(tape)
}
