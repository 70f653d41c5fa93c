//! The frames example's rules for bad input (`examples/frames/input.rs`):
//! an empty or missing folder is a clear error; files that are not images,
//! or are damaged, fail to decode one by one, so the example reports and
//! skips them and processes the rest. A broken link is such a file: listed,
//! then unreadable, not silently left out.

mod common;
#[path = "../examples/frames/input.rs"]
mod input;

use input::{decode, list_inputs};

fn folder(name: &str) -> std::path::PathBuf {
    common::temp_folder(&format!("frames-{name}"))
}

#[test]
fn an_empty_or_missing_folder_is_a_clear_error() {
    let dir = folder("empty");
    let err = list_inputs(&dir).unwrap_err().to_string();
    assert!(err.contains("holds no files"), "{err}");
    let missing = dir.join("not-there");
    let err = list_inputs(&missing).unwrap_err().to_string();
    assert!(err.starts_with("cannot read input folder"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn images_decode_and_other_files_fail_one_by_one() {
    let dir = folder("mixed");
    let mut img = image::RgbaImage::new(3, 2);
    img.put_pixel(2, 1, image::Rgba([1, 2, 3, 4]));
    img.save(dir.join("b.png")).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([200, 10, 10]))
        .save(dir.join("c.jpg"))
        .unwrap();
    std::fs::write(dir.join("a.txt"), "not an image").unwrap();
    std::fs::write(dir.join("d.jpg"), b"\xff\xd8 broken").unwrap();
    std::fs::create_dir(dir.join("subfolder")).unwrap();

    let files = list_inputs(&dir).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["a.txt", "b.png", "c.jpg", "d.jpg"],
        "files only, in name order"
    );

    assert!(decode(&files[0]).is_err(), "text is not an image");
    let png = decode(&files[1]).unwrap();
    assert_eq!((png.name.as_str(), png.width, png.height), ("b.png", 3, 2));
    // Pixel (x 2, y 1) of a 3-wide image starts at byte (1 · 3 + 2) · 4.
    let at = (3 + 2) * 4;
    assert_eq!(&png.rgba[at..at + 4], &[1, 2, 3, 4]);
    let jpg = decode(&files[2]).unwrap();
    assert_eq!((jpg.width, jpg.height, jpg.rgba.len()), (4, 4, 64));
    assert_eq!(jpg.rgba[3], 255, "RGB input gets an opaque alpha");
    assert!(decode(&files[3]).is_err(), "a damaged JPEG");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_broken_link_is_listed_and_fails_to_decode() {
    let dir = folder("broken-link");
    image::RgbaImage::new(2, 2).save(dir.join("a.png")).unwrap();
    std::os::unix::fs::symlink(dir.join("not-there.png"), dir.join("b_broken.png")).unwrap();

    let files = list_inputs(&dir).unwrap();
    assert_eq!(files.len(), 2, "the broken link is listed: {files:?}");
    assert!(decode(&files[0]).is_ok());
    let err = decode(&files[1])
        .err()
        .expect("a broken link is unreadable");
    assert!(err.to_string().contains("not-there.png"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
