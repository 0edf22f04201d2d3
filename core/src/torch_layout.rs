//! How a parameter's values map onto the tensor of the equivalent PyTorch module: the layout
//! that checkpoints store and that `vaezoo export --format pytorch` writes, so that one
//! convention holds in every file vaezoo writes while the kernels keep the layouts they
//! compute with (e.g. `(in, out)` for `x · W`). Each plugin records its parameters' views when
//! it declares them ([`crate::params::ParamBuilder::set_torch_view`]).

use serde::{Deserialize, Serialize};

/// How one parameter maps onto PyTorch's tensor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TorchView {
    /// The same shape and values (PyTorch's layout already).
    #[default]
    Same,
    /// A matrix stored `(in, out)` for `x · W`, which `nn.Linear` stores `(out, in)`.
    Transposed,
    /// The same values in another shape, PyTorch's: e.g. the `(d,)` weight and the scalar bias
    /// of a map to one output, `(1, d)` and `(1,)` in `nn.Linear(d, 1)`.
    Reshaped(Vec<usize>),
}

impl TorchView {
    /// The shape and values in PyTorch's layout of `values`, of vaezoo's `shape`.
    pub fn to_torch(
        &self,
        shape: &[usize],
        values: &[f32],
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        match self {
            Self::Same => Ok((shape.to_vec(), values.to_vec())),
            Self::Transposed => {
                let &[rows, cols] = shape else {
                    return Err(format!("{shape:?} is not a matrix to transpose"));
                };
                Ok((vec![cols, rows], transpose(values, rows, cols)))
            }
            Self::Reshaped(torch) => {
                if torch.iter().product::<usize>() != values.len() {
                    return Err(format!("{shape:?} does not hold {torch:?}"));
                }
                Ok((torch.clone(), values.to_vec()))
            }
        }
    }

    /// The inverse of [`Self::to_torch`]: vaezoo's values of `shape` from PyTorch's `torch`
    /// tensor (its shape and values), which must be what `shape` maps to.
    pub fn from_torch(
        &self,
        shape: &[usize],
        (torch_shape, values): (&[usize], &[f32]),
    ) -> Result<Vec<f32>, String> {
        let expected = match self {
            Self::Same => shape.to_vec(),
            Self::Transposed => shape.iter().rev().copied().collect(),
            Self::Reshaped(torch) => torch.clone(),
        };
        if expected != torch_shape || shape.iter().product::<usize>() != values.len() {
            return Err(format!(
                "a tensor of shape {torch_shape:?} is not {self:?} of {shape:?}"
            ));
        }
        Ok(match (self, torch_shape) {
            (Self::Transposed, &[rows, cols]) => transpose(values, rows, cols),
            _ => values.to_vec(),
        })
    }
}

/// The `rows × cols` row-major matrix `values`, transposed.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_map_there_and_back() {
        let (shape, values) = (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let cases = [
            (TorchView::Same, vec![2, 3], values.clone()),
            (
                TorchView::Transposed,
                vec![3, 2],
                vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0],
            ),
            (TorchView::Reshaped(vec![1, 6]), vec![1, 6], values.clone()),
        ];
        for (view, torch_shape, torch_values) in cases {
            let torch = view.to_torch(&shape, &values).unwrap();
            assert_eq!(
                torch,
                (torch_shape.clone(), torch_values.clone()),
                "{view:?}"
            );
            let back = view
                .from_torch(&shape, (&torch_shape, &torch_values))
                .unwrap();
            assert_eq!(back, values, "{view:?}");
        }
        assert!(TorchView::Reshaped(vec![4])
            .to_torch(&shape, &values)
            .is_err());
        assert!(TorchView::Transposed.to_torch(&[6], &values).is_err());
        assert!(TorchView::Transposed
            .from_torch(&shape, (&[2, 3], &values))
            .is_err());
    }
}
