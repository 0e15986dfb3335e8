//! Thumbnails: what a size means ([`ThumbSpec`]) and how one is made from an image's bytes
//! ([`render`]). Pure and blocking: the files service decides who may ask, bounds how many run
//! at once, makes each size once and keeps it.
//!
//! An image is never decoded before its header is read and its pixels counted against a cap
//! (a small PNG may claim 100,000 × 100,000 pixels: 40 GB decoded). A JPEG is decoded straight
//! to the smallest power-of-two fraction (1/2, 1/4, 1/8) still at least the thumbnail's size,
//! which the DCT gives almost for free: a 4000×3000 photo bound for 200×200 is decoded as
//! 500×375, 1/64 of the memory and a fraction of the time. A progressive JPEG cannot be: its
//! decoder keeps every coefficient until the last scan, 2 bytes per pixel and component, so it
//! is held to [`MAX_PROGRESSIVE_BYTES`]; a JPEG has at most [`MAX_SCANS`] scans (each one a pass
//! over the image), and lossless JPEGs (rare, and never scaled) have no thumbnails. The EXIF
//! orientation is applied, and nothing of the source's metadata (EXIF, GPS position, XMP, ICC)
//! is written to a thumbnail.
//!
//! Sizes follow PocketBase's notation, so its users know them: `WxH` crops to fill from the
//! centre, `WxHt` and `WxHb` crop from the top or bottom, `WxHf` fits inside without cropping,
//! `Wx0` and `0xH` keep the aspect ratio with one side given (the other side at most
//! [`MAX_SIDE`] too: a very tall image gets a narrower thumbnail). An image is never enlarged.

use std::fmt;
use std::io::Cursor;

use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// A thumbnail side's largest size.
pub const MAX_SIDE: u32 = 2000;
/// A JPEG's most pixels (an 8000×8000 photo): decoded scaled down, it costs far less than that.
pub const MAX_JPEG_PIXELS: u64 = 64_000_000;
/// A PNG's, GIF's or WebP's most pixels: decoded whole.
pub const MAX_OTHER_PIXELS: u64 = 25_000_000;
/// What a PNG, GIF or WebP may take decoded (a 16-bit PNG takes 8 bytes a pixel).
const MAX_OTHER_BYTES: u64 = 100 * 1024 * 1024;
/// What a progressive JPEG's coefficients may take (about 21 million pixels in colour).
pub const MAX_PROGRESSIVE_BYTES: u64 = 128 * 1024 * 1024;
/// A JPEG's most scans (a baseline one has one to four, a progressive one about ten).
pub const MAX_SCANS: usize = 100;
/// What one decode may allocate.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// What a JPEG may take decoded at the scale it is decoded at (about 44 million pixels in
/// colour; the decoder holds about as much again while it works, within [`MAX_DECODE_BYTES`]):
/// a crop that keeps most of one side of a very long image decodes it whole.
pub const MAX_SCALED_JPEG_BYTES: u64 = 128 * 1024 * 1024;
/// A JPEG thumbnail's quality.
const JPEG_QUALITY: u8 = 82;

/// Where a cropping fit keeps the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Anchor {
    Center,
    Top,
    Bottom,
}

/// How an image is brought to a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Fills the size, cropping what is outside (`WxH`, `WxHt`, `WxHb`).
    Cover(Anchor),
    /// Fits inside the size, uncropped (`WxHf`).
    Contain,
    /// The width given, the height from the aspect ratio (`Wx0`).
    Width,
    /// The height given, the width from the aspect ratio (`0xH`).
    Height,
}

/// A thumbnail size and fit, parsed from its text (`200x200`, `200x200f`, `0x300`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThumbSpec {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
}

impl ThumbSpec {
    /// `text` as a size, or `None`: sides of 0 to [`MAX_SIDE`] without leading zeros, at most
    /// one of them 0 (and then no suffix).
    pub fn parse(text: &str) -> Option<ThumbSpec> {
        let (body, anchor) = match text.as_bytes().last()? {
            b't' => (&text[..text.len() - 1], Some(Fit::Cover(Anchor::Top))),
            b'b' => (&text[..text.len() - 1], Some(Fit::Cover(Anchor::Bottom))),
            b'f' => (&text[..text.len() - 1], Some(Fit::Contain)),
            _ => (text, None),
        };
        let (w, h) = body.split_once('x')?;
        let side = |s: &str| {
            let plain = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            plain
                .then(|| s.parse::<u32>().ok())
                .flatten()
                .filter(|n| *n <= MAX_SIDE)
        };
        let (width, height) = (side(w)?, side(h)?);
        let fit = match (width, height, anchor) {
            (0, 0, _) | (0, _, Some(_)) | (_, 0, Some(_)) => return None,
            (0, _, None) => Fit::Height,
            (_, 0, None) => Fit::Width,
            (_, _, None) => Fit::Cover(Anchor::Center),
            (_, _, Some(fit)) => fit,
        };
        Some(ThumbSpec { width, height, fit })
    }

    /// Where in a `sw`×`sh` image the thumbnail is taken from, and its size.
    fn plan(&self, sw: u32, sh: u32) -> Plan {
        let (sw, sh) = (sw.max(1), sh.max(1));
        let (tw, th) = (f64::from(self.width), f64::from(self.height));
        let (fw, fh) = (f64::from(sw), f64::from(sh));
        let whole = (0, 0, sw, sh);
        let side = |v: f64| (v.round() as u32).max(1);
        match self.fit {
            Fit::Cover(anchor) => {
                let (cw, ch) = if fw / fh > tw / th {
                    (side(fh * tw / th).min(sw), sh)
                } else {
                    (sw, side(fw * th / tw).min(sh))
                };
                let x = (sw - cw) / 2;
                let y = match anchor {
                    Anchor::Top => 0,
                    Anchor::Center => (sh - ch) / 2,
                    Anchor::Bottom => sh - ch,
                };
                let out = if cw < self.width {
                    (cw, ch)
                } else {
                    (self.width, self.height)
                };
                Plan {
                    crop: (x, y, cw, ch),
                    out,
                }
            }
            Fit::Contain => {
                let scale = (tw / fw).min(th / fh).min(1.0);
                Plan {
                    crop: whole,
                    out: (side(fw * scale), side(fh * scale)),
                }
            }
            Fit::Width => {
                let scale = (tw / fw).min(f64::from(MAX_SIDE) / fh).min(1.0);
                Plan {
                    crop: whole,
                    out: (side(fw * scale), side(fh * scale)),
                }
            }
            Fit::Height => {
                let scale = (th / fh).min(f64::from(MAX_SIDE) / fw).min(1.0);
                Plan {
                    crop: whole,
                    out: (side(fw * scale), side(fh * scale)),
                }
            }
        }
    }
}

impl fmt::Display for ThumbSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self.fit {
            Fit::Cover(Anchor::Top) => "t",
            Fit::Cover(Anchor::Bottom) => "b",
            Fit::Contain => "f",
            Fit::Cover(Anchor::Center) | Fit::Width | Fit::Height => "",
        };
        write!(f, "{}x{}{suffix}", self.width, self.height)
    }
}

/// A region of the source and the size it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    crop: (u32, u32, u32, u32),
    out: (u32, u32),
}

impl Plan {
    /// Output pixels per source pixel, along a side (at most 1).
    fn factor(&self) -> f64 {
        (f64::from(self.out.0) / f64::from(self.crop.2.max(1))).min(1.0)
    }
}

/// Why an image has no thumbnail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbError {
    #[error("thumbnails are made of JPEG, PNG, GIF and WebP images, not {0}")]
    NotAnImage(String),
    #[error("the image is {width}x{height}: more pixels than a thumbnail is made from ({max})")]
    TooManyPixels { width: u64, height: u64, max: u64 },
    #[error("the image cannot be decoded: {0}")]
    Invalid(String),
}

/// A thumbnail's bytes and type.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// Whether images of `content_type` have thumbnails.
pub fn supported(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg" | "image/png" | "image/gif" | "image/webp"
    )
}

/// Makes the `spec` thumbnail of an image of `content_type` (as sniffed at upload): a JPEG of a
/// JPEG, a PNG of the others (keeping transparency; a GIF's first frame). Blocking and CPU-bound.
pub fn render(bytes: &[u8], content_type: &str, spec: &ThumbSpec) -> Result<Thumbnail, ThumbError> {
    match content_type {
        "image/jpeg" => {
            let image = decode_jpeg(bytes, spec)?;
            encode_jpeg(&resize(&image, spec))
        }
        "image/png" | "image/gif" | "image/webp" => {
            let format = match content_type {
                "image/png" => ImageFormat::Png,
                "image/gif" => ImageFormat::Gif,
                _ => ImageFormat::WebP,
            };
            let image = decode_other(bytes, format)?;
            encode_png(&resize(&image, spec))
        }
        other => Err(ThumbError::NotAnImage(other.to_owned())),
    }
}

fn invalid(e: impl fmt::Display) -> ThumbError {
    ThumbError::Invalid(e.to_string())
}

fn check_pixels(width: u64, height: u64, max: u64) -> Result<(), ThumbError> {
    if width * height > max || width == 0 || height == 0 {
        return Err(ThumbError::TooManyPixels { width, height, max });
    }
    Ok(())
}

fn decode_jpeg(bytes: &[u8], spec: &ThumbSpec) -> Result<DynamicImage, ThumbError> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(MAX_DECODE_BYTES as usize);
    decoder.read_info().map_err(invalid)?;
    let info = decoder
        .info()
        .ok_or_else(|| ThumbError::Invalid("no frame header".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_pixels(w.into(), h.into(), MAX_JPEG_PIXELS)?;
    match info.coding_process {
        jpeg_decoder::CodingProcess::Lossless => {
            return Err(ThumbError::NotAnImage("a lossless JPEG".into()));
        }
        jpeg_decoder::CodingProcess::DctProgressive => {
            let components: u64 = match info.pixel_format {
                jpeg_decoder::PixelFormat::L8 | jpeg_decoder::PixelFormat::L16 => 1,
                jpeg_decoder::PixelFormat::RGB24 => 3,
                jpeg_decoder::PixelFormat::CMYK32 => 4,
            };
            check_pixels(w.into(), h.into(), MAX_PROGRESSIVE_BYTES / (components * 2))?;
        }
        jpeg_decoder::CodingProcess::DctSequential => {}
    }
    if scans(bytes) > MAX_SCANS {
        return Err(ThumbError::Invalid(format!("more than {MAX_SCANS} scans")));
    }
    // The scale is the same along both sides, so the orientation (read only with the pixels)
    // does not change it.
    let factor = spec.plan(w, h).factor().max(spec.plan(h, w).factor());
    let want = |side: u32| (f64::from(side) * factor).ceil().clamp(1.0, 65_535.0) as u16;
    let (dw, dh) = decoder.scale(want(w), want(h)).map_err(invalid)?;
    let bytes_per_pixel: u64 = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => 1,
        jpeg_decoder::PixelFormat::L16 => 2,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        jpeg_decoder::PixelFormat::CMYK32 => 4,
    };
    check_pixels(
        dw.into(),
        dh.into(),
        MAX_SCALED_JPEG_BYTES / bytes_per_pixel,
    )?;
    let pixels = decoder.decode().map_err(invalid)?;
    let (dw, dh) = (u32::from(dw), u32::from(dh));
    let short = || ThumbError::Invalid("fewer pixels than the header says".into());
    let mut image = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            image::GrayImage::from_raw(dw, dh, pixels).map(DynamicImage::ImageLuma8)
        }
        jpeg_decoder::PixelFormat::L16 => {
            let wide = pixels
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect();
            image::ImageBuffer::from_raw(dw, dh, wide).map(DynamicImage::ImageLuma16)
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            image::RgbImage::from_raw(dw, dh, pixels).map(DynamicImage::ImageRgb8)
        }
        jpeg_decoder::PixelFormat::CMYK32 => {
            // Adobe's CMYK JPEGs, the usual ones, store the inks inverted.
            let rgb = pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u16::from(p[3]);
                    [p[0], p[1], p[2]].map(|c| (u16::from(c) * k / 255) as u8)
                })
                .collect();
            image::RgbImage::from_raw(dw, dh, rgb).map(DynamicImage::ImageRgb8)
        }
    }
    .ok_or_else(short)?;
    if let Some(orientation) = decoder.exif_data().and_then(Orientation::from_exif_chunk) {
        image.apply_orientation(orientation);
    }
    Ok(image)
}

/// How many scans a JPEG has, at most: its start-of-scan markers (entropy-coded data never
/// holds one; a metadata segment might, which only counts too many).
fn scans(bytes: &[u8]) -> usize {
    bytes
        .windows(2)
        .filter(|pair| pair == &[0xFF, 0xDA])
        .count()
}

fn decode_other(bytes: &[u8], format: ImageFormat) -> Result<DynamicImage, ThumbError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(invalid)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w.into(), h.into(), MAX_OTHER_PIXELS)?;
    let depth = u64::from(decoder.color_type().bytes_per_pixel());
    check_pixels(w.into(), h.into(), MAX_OTHER_BYTES / depth.max(1))?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(invalid)?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn resize(image: &DynamicImage, spec: &ThumbSpec) -> DynamicImage {
    let plan = spec.plan(image.width(), image.height());
    let (x, y, cw, ch) = plan.crop;
    let cropped = if (cw, ch) == (image.width(), image.height()) {
        std::borrow::Cow::Borrowed(image)
    } else {
        std::borrow::Cow::Owned(image.crop_imm(x, y, cw, ch))
    };
    let (ow, oh) = plan.out;
    if (ow, oh) == (cw, ch) {
        return cropped.into_owned();
    }
    if cw >= ow * 2 {
        // A box filter: every source pixel counted once, fast for large reductions.
        cropped.thumbnail_exact(ow, oh)
    } else {
        // Close to its size, where a box filter aliases.
        cropped.resize_exact(ow, oh, FilterType::Triangle)
    }
}

fn encode_jpeg(image: &DynamicImage) -> Result<Thumbnail, ThumbError> {
    let (w, h) = (image.width(), image.height());
    let side = |v: u32| u16::try_from(v).map_err(invalid);
    let mut bytes = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut bytes, JPEG_QUALITY);
    match image {
        DynamicImage::ImageLuma8(gray) => encoder.encode(
            gray.as_raw(),
            side(w)?,
            side(h)?,
            jpeg_encoder::ColorType::Luma,
        ),
        other => {
            let rgb = other.to_rgb8();
            encoder.encode(
                rgb.as_raw(),
                side(w)?,
                side(h)?,
                jpeg_encoder::ColorType::Rgb,
            )
        }
    }
    .map_err(invalid)?;
    Ok(Thumbnail {
        bytes,
        content_type: "image/jpeg",
    })
}

fn encode_png(image: &DynamicImage) -> Result<Thumbnail, ThumbError> {
    let image = match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => std::borrow::Cow::Borrowed(image),
        other => std::borrow::Cow::Owned(DynamicImage::ImageRgba8(other.to_rgba8())),
    };
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(invalid)?;
    Ok(Thumbnail {
        bytes: bytes.into_inner(),
        content_type: "image/png",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ThumbSpec {
        ThumbSpec::parse(text).unwrap_or_else(|| panic!("{text} parses"))
    }

    #[test]
    fn sizes_parse_strictly_and_print_back() {
        for good in [
            "200x200", "200x200t", "200x200b", "200x200f", "0x300", "300x0", "1x2000",
        ] {
            assert_eq!(spec(good).to_string(), good);
        }
        for bad in [
            "", "x", "200", "200x", "x200", "0x0", "0x0f", "0x200f", "200x0t", "2001x10", "010x10",
            "10x10x", "10x10ff", "-1x10", "+1x10", "10X10", "1e3x10", "10 x10",
        ] {
            assert_eq!(ThumbSpec::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plans_crop_fit_and_never_enlarge() {
        // A landscape photo to a square: the centre square, then scaled.
        let plan = spec("200x200").plan(4000, 3000);
        assert_eq!(plan.crop, (500, 0, 3000, 3000));
        assert_eq!(plan.out, (200, 200));
        // A portrait one, from the top and the bottom.
        assert_eq!(spec("200x200t").plan(300, 600).crop, (0, 0, 300, 300));
        assert_eq!(spec("200x200b").plan(300, 600).crop, (0, 300, 300, 300));
        // Fitting inside keeps the aspect ratio.
        assert_eq!(spec("200x200f").plan(4000, 3000).out, (200, 150));
        assert_eq!(spec("200x0").plan(4000, 3000).out, (200, 150));
        assert_eq!(spec("0x300").plan(4000, 3000).out, (400, 300));
        // Smaller than the size: never enlarged.
        assert_eq!(spec("200x200f").plan(100, 50).out, (100, 50));
        let small = spec("200x200").plan(100, 50);
        assert_eq!((small.crop, small.out), ((25, 0, 50, 50), (50, 50)));
        // A very tall image to a width, a very wide one to a height: the other side is held
        // to the largest side too, so neither is decoded whole.
        let tall = spec("800x0").plan(976, 65535);
        assert_eq!(tall.out, (30, MAX_SIDE));
        assert!(tall.factor() < 0.05, "{}", tall.factor());
        assert_eq!(spec("0x800").plan(65535, 976).out, (MAX_SIDE, 30));
    }

    fn jpeg(width: u16, height: u16, exif: Option<&[u8]>) -> Vec<u8> {
        let mut pixels = Vec::new();
        for y in 0..height {
            for x in 0..width {
                // Left half red, right half blue: orientation shows.
                let left = x < width / 2;
                pixels.extend_from_slice(if left { &[250, 0, 0] } else { &[0, 0, 250] });
                let _ = y;
            }
        }
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
        if let Some(exif) = exif {
            encoder
                .add_app_segment(1, &[b"Exif\0\0".as_slice(), exif].concat())
                .expect("exif segment");
        }
        encoder
            .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
            .expect("encode");
        bytes
    }

    /// A little-endian TIFF header with one IFD entry: Orientation = `value`.
    fn orientation_exif(value: u16) -> Vec<u8> {
        let mut tiff = b"II*\0".to_vec();
        tiff.extend_from_slice(&8u32.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&value.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff
    }

    fn decoded(thumb: &Thumbnail) -> DynamicImage {
        image::load_from_memory(&thumb.bytes)
            .or_else(|_| {
                let mut d = jpeg_decoder::Decoder::new(Cursor::new(&thumb.bytes));
                let pixels = d.decode().map_err(|e| e.to_string())?;
                let info = d.info().ok_or("no info")?;
                image::RgbImage::from_raw(info.width.into(), info.height.into(), pixels)
                    .map(DynamicImage::ImageRgb8)
                    .ok_or_else(|| "short".to_owned())
            })
            .expect("a thumbnail decodes")
    }

    /// A JPEG of 65535×976 pixels cropped square to 800: the crop keeps 800 of its 976 rows,
    /// so it would be decoded unscaled, all 64 million pixels of it. Refused before decoding.
    #[test]
    fn a_jpeg_too_large_at_the_scale_it_needs_is_refused_before_decoding() {
        let mut long = jpeg(16, 16, None);
        let sof = long.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        long[sof + 5..sof + 7].copy_from_slice(&976u16.to_be_bytes());
        long[sof + 7..sof + 9].copy_from_slice(&65535u16.to_be_bytes());
        let refused = render(&long, "image/jpeg", &spec("800x800")).err();
        assert!(
            matches!(
                refused,
                Some(ThumbError::TooManyPixels {
                    width: 65535,
                    height: 976,
                    ..
                })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_jpeg_becomes_a_jpeg_of_the_size() {
        let thumb = render(&jpeg(1600, 1200, None), "image/jpeg", &spec("200x200")).unwrap();
        assert_eq!(thumb.content_type, "image/jpeg");
        let image = decoded(&thumb);
        assert_eq!((image.width(), image.height()), (200, 200));
        let fit = render(&jpeg(1600, 1200, None), "image/jpeg", &spec("200x200f")).unwrap();
        let image = decoded(&fit);
        assert_eq!((image.width(), image.height()), (200, 150));
    }

    #[test]
    fn exif_orientation_is_applied_and_no_metadata_is_kept() {
        let source = jpeg(400, 200, Some(&orientation_exif(6)));
        let thumb = render(&source, "image/jpeg", &spec("100x0")).unwrap();
        let image = decoded(&thumb).to_rgb8();
        // Rotated 90° clockwise: 200 wide and 400 high became 100x200; red (the left) on top.
        assert_eq!((image.width(), image.height()), (100, 200));
        assert!(
            image.get_pixel(50, 20)[0] > 200,
            "{:?}",
            image.get_pixel(50, 20)
        );
        assert!(
            image.get_pixel(50, 180)[2] > 200,
            "{:?}",
            image.get_pixel(50, 180)
        );
        assert!(
            !thumb.bytes.windows(6).any(|w| w == b"Exif\0\0"),
            "the thumbnail keeps no EXIF"
        );
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_pixel(width, height, image::Rgba([10, 200, 30, 128]));
        let mut bytes = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(image)
            .write_to(&mut bytes, ImageFormat::Png)
            .unwrap();
        bytes.into_inner()
    }

    #[test]
    fn a_png_becomes_a_png_keeping_its_transparency() {
        let thumb = render(&png(300, 100), "image/png", &spec("60x60")).unwrap();
        assert_eq!(thumb.content_type, "image/png");
        let image = decoded(&thumb).to_rgba8();
        assert_eq!((image.width(), image.height()), (60, 60));
        assert_eq!(image.get_pixel(30, 30)[3], 128);
    }

    /// A PNG whose header claims `width`×`height`, with no pixels after it.
    fn claimed_png(width: u32, height: u32) -> Vec<u8> {
        let mut real = png(1, 1);
        // IHDR's width and height follow the 8-byte signature and the chunk's length and type.
        real[16..20].copy_from_slice(&width.to_be_bytes());
        real[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&real[12..29]);
        real[29..33].copy_from_slice(&crc.to_be_bytes());
        real
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let bomb = claimed_png(100_000, 100_000);
        assert!(bomb.len() < 100);
        match render(&bomb, "image/png", &spec("200x200")) {
            Err(ThumbError::TooManyPixels { width, height, .. }) => {
                assert_eq!((width, height), (100_000, 100_000));
            }
            other => panic!("{other:?}"),
        }
    }

    fn progressive_jpeg(width: u16, height: u16) -> Vec<u8> {
        let pixels = vec![120u8; usize::from(width) * usize::from(height) * 3];
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
        encoder.set_progressive(true);
        encoder
            .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
            .expect("encode");
        bytes
    }

    #[test]
    fn a_progressive_jpeg_is_held_to_what_its_coefficients_take() {
        let real = progressive_jpeg(64, 48);
        assert!(scans(&real) > 1, "progressive: several scans");
        let thumb = render(&real, "image/jpeg", &spec("32x32")).unwrap();
        assert_eq!(decoded(&thumb).width(), 32);
        // The same header claiming 7000×7000: fewer pixels than a baseline JPEG may have, but
        // its coefficients would take 294 MB.
        let sof = real
            .windows(2)
            .position(|pair| pair == [0xFF, 0xC2])
            .expect("a progressive frame header");
        let mut claimed = real.clone();
        claimed[sof + 5..sof + 7].copy_from_slice(&7000u16.to_be_bytes());
        claimed[sof + 7..sof + 9].copy_from_slice(&7000u16.to_be_bytes());
        match render(&claimed, "image/jpeg", &spec("32x32")) {
            Err(ThumbError::TooManyPixels { width, height, max }) => {
                assert_eq!(
                    (width, height, max),
                    (7000, 7000, MAX_PROGRESSIVE_BYTES / 6)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_jpeg_of_too_many_scans_is_refused() {
        let mut many = jpeg(16, 16, None);
        // A comment segment right after the start of image, holding start-of-scan markers.
        let comment: Vec<u8> = std::iter::repeat_n([0xFF, 0xDA], MAX_SCANS)
            .flatten()
            .collect();
        let length = u16::try_from(comment.len() + 2).unwrap().to_be_bytes();
        let segment = [&[0xFF, 0xFE], &length[..], &comment].concat();
        many.splice(2..2, segment);
        assert!(matches!(
            render(&many, "image/jpeg", &spec("8x8")),
            Err(ThumbError::Invalid(reason)) if reason.contains("scans")
        ));
    }

    #[test]
    fn a_sixteen_bit_png_is_held_to_its_bytes() {
        // 4000×4000 is within the pixels allowed, but 16-bit RGBA takes 128 MB decoded.
        let mut wide = claimed_png(4000, 4000);
        wide[24] = 16;
        let crc = crc32(&wide[12..29]);
        wide[29..33].copy_from_slice(&crc.to_be_bytes());
        match render(&wide, "image/png", &spec("200x200")) {
            Err(ThumbError::TooManyPixels { max, .. }) => assert_eq!(max, MAX_OTHER_BYTES / 8),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bytes_that_are_no_image_fail_cleanly() {
        let mut truncated = jpeg(64, 64, None);
        truncated.truncate(truncated.len() / 3);
        for (bytes, kind) in [
            (truncated, "image/jpeg"),
            (b"not a png at all".to_vec(), "image/png"),
            (b"GIF89a".to_vec(), "image/gif"),
            (b"RIFF\0\0\0\0WEBP".to_vec(), "image/webp"),
        ] {
            assert!(
                matches!(
                    render(&bytes, kind, &spec("10x10")),
                    Err(ThumbError::Invalid(_))
                ),
                "{kind}"
            );
        }
        assert_eq!(
            render(b"%PDF-1.7", "application/pdf", &spec("10x10")).unwrap_err(),
            ThumbError::NotAnImage("application/pdf".into())
        );
    }
}
