//! Image folders: one sub-folder per class holding JPEG or PNG files (CUB-200, Stanford Cars,
//! Caltech-256). Images are decoded on read, converted to RGB and resized to a square.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::error::io_at;
use crate::{DataError, Source};

/// A class-per-folder image dataset, read lazily.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// Class names (sub-folder names), sorted; a label is an index here.
    pub class_names: Vec<String>,
    /// (file, label) of every image, by class then file name.
    pub files: Vec<(PathBuf, u16)>,
    /// Side of the square every image is resized to.
    pub size: usize,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_at(dir))?;
    entries.sort();
    Ok(entries)
}

impl ImageFolder {
    /// Lists `root`'s class folders and their images; every image is resized to `size`².
    pub fn open(root: &Path, size: usize) -> Result<Self, DataError> {
        if size == 0 {
            return Err(DataError::Invalid(
                "image folder resize must be at least 1".into(),
            ));
        }
        let mut class_names = Vec::new();
        let mut files = Vec::new();
        for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let label = u16::try_from(class_names.len())
                .map_err(|_| DataError::Invalid(format!("{}: too many classes", root.display())))?;
            let images: Vec<PathBuf> = sorted_entries(&dir)?
                .into_iter()
                .filter(|p| is_image(p))
                .collect();
            if images.is_empty() {
                return Err(DataError::EmptyClass { dir });
            }
            class_names.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            files.extend(images.into_iter().map(|p| (p, label)));
        }
        if class_names.is_empty() {
            return Err(DataError::Invalid(format!(
                "{}: no class folders",
                root.display()
            )));
        }
        Ok(Self {
            class_names,
            files,
            size,
        })
    }
}

impl Source for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn shape(&self) -> [usize; 3] {
        [3, self.size, self.size]
    }

    fn classes(&self) -> usize {
        self.class_names.len()
    }

    fn label(&self, i: usize) -> usize {
        self.files[i].1 as usize
    }

    fn read(&self, i: usize, out: &mut Vec<u8>) -> Result<(), DataError> {
        let path = &self.files[i].0;
        let img = image::open(path).map_err(|source| DataError::Image {
            file: path.clone(),
            source,
        })?;
        let side = self.size as u32;
        let rgb = img.resize_exact(side, side, FilterType::Triangle).to_rgb8();
        let plane = self.size * self.size;
        out.clear();
        out.resize(3 * plane, 0);
        for (p, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + p] = px[c];
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, rgb: [u8; 3]) {
        image::RgbImage::from_pixel(8, 8, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    #[test]
    fn class_folders_read_back_with_channels_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for (class, colors) in [
            ("b_cat", [[10, 20, 30], [40, 50, 60]]),
            ("a_dog", [[200, 100, 0], [1, 2, 3]]),
        ] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for (i, c) in colors.iter().enumerate() {
                png(&dir.path().join(class).join(format!("{i}.png")), *c);
            }
        }
        std::fs::write(dir.path().join("a_dog").join("notes.txt"), "not an image").unwrap();
        let folder = ImageFolder::open(dir.path(), 8).unwrap();
        assert_eq!(folder.class_names, ["a_dog", "b_cat"]);
        assert_eq!(folder.labels(), [0, 0, 1, 1]);
        let mut buf = Vec::new();
        folder.read(3, &mut buf).unwrap();
        assert_eq!(buf.len(), 3 * 64);
        for (ch, want) in [40u8, 50, 60].iter().enumerate() {
            assert!(
                buf[ch * 64..(ch + 1) * 64].iter().all(|v| v == want),
                "channel {ch}"
            );
        }
        // resizing changes the shape, not a uniform colour
        let big = ImageFolder::open(dir.path(), 16).unwrap();
        big.read(0, &mut buf).unwrap();
        assert_eq!(big.shape(), [3, 16, 16]);
        assert!(buf[..256].iter().all(|&v| v == 200));
    }

    #[test]
    fn empty_classes_and_undecodable_images_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        png(&dir.path().join("a").join("x.png"), [1, 2, 3]);
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let msg = ImageFolder::open(dir.path(), 8).unwrap_err().to_string();
        assert!(msg.contains("empty") && msg.contains("no .jpg"), "{msg}");
        std::fs::remove_dir(dir.path().join("empty")).unwrap();
        std::fs::write(dir.path().join("a").join("y.jpg"), b"not a jpeg").unwrap();
        let folder = ImageFolder::open(dir.path(), 8).unwrap();
        let msg = folder.read(1, &mut Vec::new()).unwrap_err().to_string();
        assert!(msg.contains("y.jpg: cannot decode image"), "{msg}");
    }
}
