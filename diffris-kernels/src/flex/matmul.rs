//! One matrix product on f32 slices through the `gemm` crate (what flex multiplies with).

/// `dst = beta * lhs rhs` (or `dst += beta * lhs rhs` with `accumulate`). Each operand is given
/// by its slice (element 0 is the matrix's first) and (row, column) strides. Single-threaded
/// unless `parallel` (then gemm splits rows and columns over rayon's threads, never the inner
/// dimension: each element's sum has the same order whatever the thread count).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    dst_strides: [isize; 2],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    beta: f32,
    parallel: bool,
) {
    let span = |[rs, cs]: [isize; 2], rows: usize, cols: usize| {
        (rows.saturating_sub(1) as isize * rs + cols.saturating_sub(1) as isize * cs) as usize
    };
    // The bounds gemm will touch, checked so the unsafe call stays inside the slices.
    if m == 0 || n == 0 {
        return;
    }
    assert!(span(dst_strides, m, n) < dst.len());
    if k > 0 {
        assert!(span(lhs_strides, m, k) < lhs.len());
        assert!(span(rhs_strides, k, n) < rhs.len());
    }
    // SAFETY: the strides are non-negative and every index gemm reads or writes is within the
    // slices (checked above); dst does not alias lhs or rhs (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_strides[1],
            dst_strides[0],
            accumulate,
            lhs.as_ptr(),
            lhs_strides[1],
            lhs_strides[0],
            rhs.as_ptr(),
            rhs_strides[1],
            rhs_strides[0],
            1.0,
            beta,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}
