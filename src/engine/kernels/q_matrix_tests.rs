//! Tests of [`QMatrix`]: the product against the dequantized weights, the scalar kernels
//! against the AVX2 ones, and independence from tiles, row counts and threads.
use super::*;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Reference: dequantized weights times the f32 activations.
fn reference(m: &QMatrix, x: &[f32]) -> Vec<f32> {
    let (n, k) = m.dims();
    let mut row = vec![0f32; k];
    let mut out = vec![0f32; x.len() / k * n];
    for j in 0..n {
        m.dequantize_row(j, &mut row);
        for (t, xs) in x.chunks(k).enumerate() {
            out[t * n + j] = row.iter().zip(xs).map(|(a, b)| a * b).sum();
        }
    }
    out
}

fn matrix(kind: GgmlDType, n: usize, k: usize) -> QMatrix {
    let w = Tensor::from_vec(random(n, k, 7), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, kind).unwrap();
    QMatrix::from_qtensor(&q).unwrap().unwrap()
}

fn quantized(x: &[f32], k: usize) -> XQuant {
    let mut xq = XQuant::default();
    xq.quantize(x, k);
    xq
}

/// The kernels this machine can run: the scalar ones, AVX2 and VNNI where present.
fn kernels() -> Vec<Isa> {
    match Isa::best() {
        Isa::Scalar => vec![Isa::Scalar],
        Isa::Avx2 => vec![Isa::Scalar, Isa::Avx2],
        Isa::Vnni => vec![Isa::Scalar, Isa::Avx2, Isa::Vnni],
    }
}

fn product(m: &QMatrix, isa: Isa, xq: &XQuant) -> Vec<f32> {
    let mut out = vec![0f32; xq.len() * m.dims().0];
    m.product(isa, xq, &mut out);
    out
}

#[test]
fn kernels_match_the_dequantized_product() {
    for kind in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4_0] {
        // 37 rows: a padded last panel; 96 columns: an odd number of blocks
        let (n, k) = (37, 96);
        let m = matrix(kind, n, k);
        // the 4-row tile, each tail, both together, and many tiles
        for rows in [1, 2, 3, 4, 5, 6, 7, 9, 70] {
            let x = random(rows, k, rows as u64);
            let xq = quantized(&x, k);
            let want = reference(&m, &x);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for isa in kernels() {
                let out = product(&m, isa, &xq);
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    // the activations' 8-bit rounding is the only difference
                    assert!(
                        (a - b).abs() < 0.02 * scale,
                        "{kind:?} {isa:?} rows {rows} [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    if kernels().len() == 1 {
        eprintln!("skipping: only the scalar kernels run on this machine");
        return;
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for kind in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let (n, k) = (45, 160);
        let m = matrix(kind, n, k);
        for rows in [1, 2, 3, 4, 5, 11] {
            let xq = quantized(&random(rows, k, 40 + rows as u64), k);
            let scalar = bits(&product(&m, Isa::Scalar, &xq));
            for isa in &kernels()[1..] {
                let v = bits(&product(&m, *isa, &xq));
                assert_eq!(scalar, v, "{kind:?} {isa:?} rows {rows}");
            }
        }
    }
}

#[test]
fn q4_0_is_read_as_the_same_values() {
    let w = Tensor::from_vec(random(4, 64, 3), (4, 64), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
    let want: Vec<f32> = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let m = QMatrix::from_qtensor(&q).unwrap().unwrap();
    assert_eq!(m.kind(), QKind::Q4_1);
    let mut got = vec![0f32; 4 * 64];
    for j in 0..4 {
        m.dequantize_row(j, &mut got[j * 64..(j + 1) * 64]);
    }
    assert_eq!(got, want);
}

#[test]
fn the_panels_hold_the_ggml_values() {
    for kind in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let (n, k) = (19, 64);
        let w = Tensor::from_vec(random(n, k, 8), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, kind).unwrap();
        let want: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let m = QMatrix::from_qtensor(&q).unwrap().unwrap();
        let mut got = vec![0f32; n * k];
        for j in 0..n {
            m.dequantize_row(j, &mut got[j * k..(j + 1) * k]);
        }
        assert_eq!(got, want, "{kind:?}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for kind in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let m = matrix(kind, 300, 128);
        for rows in [1, 5, 70] {
            let xq = quantized(&random(rows, 128, 9), 128);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![0f32; rows * 300];
                pool.install(|| m.matmul(&xq, &mut out));
                out
            };
            let one = run(1);
            assert_eq!(one, run(2), "{kind:?} rows {rows}");
            assert_eq!(one, run(3), "{kind:?} rows {rows}");
        }
    }
}

/// A prompt's prefill and its one-token decode steps must agree: a row's value may not
/// depend on the rows beside it, on where it falls in a tile or row block, or on how many
/// rows there are.
#[test]
fn a_row_alone_equals_the_row_in_a_batch() {
    // 1024 columns: row blocks of 16, so 70 rows cross four of them
    let (n, k, total) = (50, 1024, 70);
    assert!(row_block(k) < total, "the test must cross a row block");
    for kind in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let m = matrix(kind, n, k);
        let x = random(total, k, 5);
        for isa in kernels() {
            let all = product(&m, isa, &quantized(&x, k));
            for t in 0..total {
                let one = product(&m, isa, &quantized(&x[t * k..(t + 1) * k], k));
                assert_eq!(&one[..], &all[t * n..(t + 1) * n], "{kind:?} row {t}");
            }
            // every count 1..=70, starting at rows that fall on every tile position
            for start in 0..TILE {
                for rows in 1..=total - start {
                    let part = &x[start * k..(start + rows) * k];
                    let got = product(&m, isa, &quantized(part, k));
                    assert_eq!(
                        &got[..],
                        &all[start * n..(start + rows) * n],
                        "{kind:?} {isa:?} rows {start}..{}",
                        start + rows
                    );
                }
            }
        }
    }
}

#[test]
fn unsupported_kinds_and_widths_are_declined() {
    let w = Tensor::from_vec(random(2, 40, 1), (2, 40), &Device::Cpu).unwrap();
    let f = QTensor::quantize(&w, GgmlDType::F32).unwrap();
    assert!(QMatrix::from_qtensor(&f).unwrap().is_none());
}
