//! Inline small tensors (tier 1): no allocation, `Copy`, conversion to owned
//! tensors, and use as a kernel uniform on the GPU.

mod common;

use tensorzone::*;

#[test]
fn small_tensors_are_inline_copy_values() {
    assert_eq!(std::mem::size_of::<SmallTensor<f32, 4>>(), 16);
    assert_eq!(std::mem::size_of::<SmallTensor<u8, 3>>(), 3);
    let a = SmallTensor::new([1.0f32, 2.0, 3.0, 4.0]);
    let mut b = a; // Copy
    b[0] = 9.0;
    assert_eq!(a.as_slice(), &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(b.into_array(), [9.0, 2.0, 3.0, 4.0]);
    assert_eq!(SmallTensor::<u16, 3>::splat(7).as_slice(), &[7, 7, 7]);
    assert_eq!(SmallTensor::<i32, 2>::default().as_slice(), &[0, 0]);
    let c: SmallTensor<u8, 2> = [1, 2].into();
    assert_eq!((c.len(), c.is_empty(), c.dtype()), (2, false, DType::U8));
    assert_eq!(c.as_bytes(), &[1, 2]);
    assert_eq!(
        SmallTensor::new([1u32, 0x0102_0304]).as_bytes(),
        &[1, 0, 0, 0, 4, 3, 2, 1]
    );
    let mut d = SmallTensor::new([f16::from_f32(1.0); 2]);
    d.as_mut_slice()[1] = f16::from_f32(-2.0);
    assert_eq!(d[1], f16::from_f32(-2.0));
}

#[test]
fn small_tensors_convert_to_owned_ones() {
    for zone in common::zones() {
        let blocks0 = zone.stats().device_blocks_created;
        let s = SmallTensor::new([1i32, -2, 3, -4, 5, -6]);
        let mut t = s.to_tensor(&zone, Location::Device).unwrap();
        assert_eq!(t.dims(), &[6]);
        assert_eq!(t.to_vec().unwrap(), [1, -2, 3, -4, 5, -6]);
        let mut m = s.to_tensor_shaped(&zone, [2, 3], Location::Host).unwrap();
        assert_eq!(m.dims(), &[2, 3]);
        assert_eq!(m.to_vec().unwrap(), [1, -2, 3, -4, 5, -6]);
        assert_eq!(
            s.to_tensor_shaped(&zone, [4], Location::Host).err(),
            Some(Error::LengthMismatch {
                expected: 4,
                actual: 6
            })
        );
        assert!(matches!(
            SmallTensor::<f32, 0>::new([]).to_tensor(&zone, Location::Host),
            Err(Error::EmptyShape { .. })
        ));
        assert!(zone.stats().device_blocks_created <= blocks0 + 1);
    }
}

const UNIFORM_KERNEL: &str = r#"
struct Params { scale: f32, bias: f32, _pad0: f32, _pad1: f32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&data)) {
        data[i] = data[i] * params.scale + params.bias;
    }
}
"#;

#[test]
fn a_small_tensor_is_a_kernel_uniform() {
    for zone in common::zones() {
        let (Some(device), Some(queue)) = (zone.wgpu_device(), zone.wgpu_queue()) else {
            continue;
        };
        let params = SmallTensor::new([3.0f32, 0.5, 0.0, 0.0]);
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: params.as_bytes().len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&uniform, 0, params.as_bytes());
        let data: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let mut t = Tensor::from_slice(&zone, [100], &data, Location::Device).unwrap();
        common::dispatch(
            &zone,
            UNIFORM_KERNEL,
            vec![
                uniform.as_entire_binding(),
                wgpu::BindingResource::Buffer(t.binding().unwrap()),
            ],
            2,
        );
        t.mark_device_written().unwrap();
        let want: Vec<f32> = data.iter().map(|x| x * 3.0 + 0.5).collect();
        assert_eq!(t.to_vec().unwrap(), want);
    }
}
