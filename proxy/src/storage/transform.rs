//! Image transforms as Supabase Storage offers them (pure): the options of a
//! render URL or a signed token, the output format a client gets, and the
//! decode → resize → encode pipeline (`image` + `fast_image_resize` +
//! libwebp, and rav1e through `image` for AVIF). Sizes follow imgproxy as storage-api configures it: `cover`
//! crops to the box, `contain` fits inside it, `fill` stretches; a missing
//! side keeps the aspect ratio; images are never enlarged.
use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// Widths and heights are clamped to 1..=MAX_SIDE (Supabase's documented 2500).
pub const MAX_SIDE: u32 = 2500;
/// Quality when none is asked for (Supabase's default).
pub const DEFAULT_QUALITY: u8 = 80;
/// rav1e's speed for AVIF (1 slowest … 10 fastest).
const AVIF_SPEED: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    Cover,
    Contain,
    Fill,
}

/// The `format` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Not given: WebP if the client accepts it, else the source's format.
    Auto,
    /// `origin`: the source's format.
    Origin,
    /// `webp`.
    Webp,
    /// `avif`.
    Avif,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub resize: Resize,
    pub quality: u8,
    pub format: Requested,
}

/// A refused option, in the words storage-api's schema validation uses.
#[derive(Debug, PartialEq, Eq)]
pub struct BadOption(pub String);

/// What went wrong with the source image (imgproxy's 422 answers).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("Source image format is not supported")]
    Unsupported,
    #[error("Source image resolution is too big")]
    TooManyPixels,
    #[error("Source image file is too big")]
    TooLarge,
    #[error("Invalid source image: {0}")]
    Invalid(String),
    #[error("Encoding the image failed: {0}")]
    Encode(String),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Jpeg,
    Png,
    Webp,
    Gif,
    Avif,
}

impl Output {
    pub fn mime(self) -> &'static str {
        match self {
            Output::Jpeg => "image/jpeg",
            Output::Png => "image/png",
            Output::Webp => "image/webp",
            Output::Gif => "image/gif",
            Output::Avif => "image/avif",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Output::Jpeg => "jpeg",
            Output::Png => "png",
            Output::Webp => "webp",
            Output::Gif => "gif",
            Output::Avif => "avif",
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options { width: None, height: None, resize: Resize::Cover, quality: DEFAULT_QUALITY, format: Requested::Auto }
    }
}

fn side(name: &str, value: &str) -> Result<Option<u32>, BadOption> {
    let n: i64 = value.trim().parse().map_err(|_| BadOption(format!("querystring/{name} must be integer")))?;
    if n < 0 {
        return Err(BadOption(format!("querystring/{name} must be >= 0")));
    }
    // 0 means "not given", as storage-api treats a falsy value.
    Ok((n > 0).then(|| n.min(MAX_SIDE as i64) as u32))
}

impl Options {
    /// One `name`/`value` option; unknown names are ignored, as storage-api does.
    fn set(&mut self, name: &str, value: &str) -> Result<(), BadOption> {
        match name {
            "width" => self.width = side(name, value)?,
            "height" => self.height = side(name, value)?,
            "resize" => {
                self.resize = match value {
                    "cover" => Resize::Cover,
                    "contain" => Resize::Contain,
                    "fill" => Resize::Fill,
                    _ => return Err(BadOption("querystring/resize must be equal to one of the allowed values".into())),
                }
            }
            "format" => {
                self.format = match value {
                    "origin" => Requested::Origin,
                    "webp" => Requested::Webp,
                    "avif" => Requested::Avif,
                    _ => return Err(BadOption("querystring/format must be equal to one of the allowed values".into())),
                }
            }
            "quality" => {
                let q: i64 =
                    value.trim().parse().map_err(|_| BadOption("querystring/quality must be integer".into()))?;
                if q < 20 {
                    return Err(BadOption("querystring/quality must be >= 20".into()));
                }
                if q > 100 {
                    return Err(BadOption("querystring/quality must be <= 100".into()));
                }
                self.quality = q as u8;
            }
            _ => {}
        }
        Ok(())
    }

    /// The options of a render URL's query (`width`, `height`, `resize`,
    /// `quality`, `format`; empty values count as absent).
    pub fn from_query(query: &str) -> Result<Options, BadOption> {
        let mut options = Options::default();
        for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
            let value = crate::http::percent_decode(value);
            if !value.is_empty() {
                options.set(name, &value)?;
            }
        }
        Ok(options)
    }

    /// The options of a signed URL's `transform` body object.
    pub fn from_json(value: &serde_json::Value) -> Result<Options, BadOption> {
        let mut options = Options::default();
        let Some(map) = value.as_object() else {
            return Err(BadOption("body/transform must be object".into()));
        };
        for (name, value) in map {
            let text = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            options.set(name, &text).map_err(|BadOption(m)| BadOption(m.replace("querystring/", "body/transform/")))?;
        }
        Ok(options)
    }

    /// The `transformations` claim of a signed token, storage-api's
    /// `height:200,width:200,resize:cover,quality:80,format:origin`.
    pub fn to_token(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = self.height {
            parts.push(format!("height:{h}"));
        }
        if let Some(w) = self.width {
            parts.push(format!("width:{w}"));
        }
        let resize = match self.resize {
            Resize::Cover => "cover",
            Resize::Contain => "contain",
            Resize::Fill => "fill",
        };
        parts.push(format!("resize:{resize}"));
        if self.quality != DEFAULT_QUALITY {
            parts.push(format!("quality:{}", self.quality));
        }
        match self.format {
            Requested::Auto => {}
            Requested::Origin => parts.push("format:origin".into()),
            Requested::Webp => parts.push("format:webp".into()),
            Requested::Avif => parts.push("format:avif".into()),
        }
        parts.join(",")
    }

    /// The options of a signed token's `transformations` claim. Values
    /// storage-api itself may have written (`resize:undefined`) fall back to
    /// the defaults, as its parser does; the token is ours, so nothing here
    /// is refused.
    pub fn from_token(text: &str) -> Options {
        let mut options = Options::default();
        for (name, value) in text.split(',').filter_map(|p| p.split_once(':')) {
            let _ignored_as_storage_api_does = options.set(name, value);
        }
        options
    }

    /// The output format for a source of `source` format and a client
    /// sending `accept`.
    pub fn output(&self, source: Output, accept: Option<&str>) -> Output {
        match self.format {
            Requested::Webp => Output::Webp,
            Requested::Avif => Output::Avif,
            Requested::Origin => source,
            Requested::Auto if accept.is_some_and(|a| a.contains("image/webp")) => Output::Webp,
            Requested::Auto => source,
        }
    }

    /// A stable text of what decides a rendering's bytes (cache key part).
    pub fn cache_key(&self, output: Output) -> String {
        format!(
            "w{}h{}r{:?}q{}f{}",
            self.width.unwrap_or(0),
            self.height.unwrap_or(0),
            self.resize,
            self.quality,
            output.name()
        )
    }
}

/// Limits of one rendering.
#[derive(Debug, Clone, Copy)]
pub struct Limits2 {
    /// Decoded pixels (width × height) of the source.
    pub max_pixels: u64,
    /// Bytes of the source.
    pub max_source_bytes: u64,
}

/// The format of a source, from its first bytes.
pub fn source_format(bytes: &[u8]) -> Result<(ImageFormat, Output), RenderError> {
    let format = image::guess_format(bytes).map_err(|_| RenderError::Unsupported)?;
    let output = match format {
        ImageFormat::Jpeg => Output::Jpeg,
        ImageFormat::Png => Output::Png,
        ImageFormat::WebP => Output::Webp,
        ImageFormat::Gif => Output::Gif,
        _ => return Err(RenderError::Unsupported),
    };
    Ok((format, output))
}

/// The box an image of `w`×`h` is resized into: `(resize to, crop to)`.
/// Never larger than the source (imgproxy's `enlarge` is off).
pub fn geometry(w: u32, h: u32, options: &Options) -> ((u32, u32), (u32, u32)) {
    let (wf, hf) = (w as f64, h as f64);
    let round = |v: f64| (v.round() as u32).max(1);
    match (options.width, options.height) {
        (None, None) => ((w, h), (w, h)),
        (Some(tw), None) => {
            let s = (tw as f64 / wf).min(1.0);
            let size = (round(wf * s), round(hf * s));
            (size, size)
        }
        (None, Some(th)) => {
            let s = (th as f64 / hf).min(1.0);
            let size = (round(wf * s), round(hf * s));
            (size, size)
        }
        (Some(tw), Some(th)) => match options.resize {
            Resize::Fill => {
                let size = (tw.min(w), th.min(h));
                (size, size)
            }
            Resize::Contain => {
                let s = (tw as f64 / wf).min(th as f64 / hf).min(1.0);
                let size = (round(wf * s), round(hf * s));
                (size, size)
            }
            Resize::Cover => {
                let s = (tw as f64 / wf).max(th as f64 / hf).min(1.0);
                let size = (round(wf * s), round(hf * s));
                (size, (tw.min(size.0), th.min(size.1)))
            }
        },
    }
}

/// Renders `bytes` as `options` ask, as `output`. The header is read first:
/// a source over `limits.max_pixels` is refused before any pixel is decoded.
pub fn render(bytes: &[u8], options: &Options, output: Output, limits: Limits2) -> Result<Vec<u8>, RenderError> {
    if bytes.len() as u64 > limits.max_source_bytes {
        return Err(RenderError::TooLarge);
    }
    let (format, _) = source_format(bytes)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decode_limits = Limits::default();
    // A second guard beside the pixel count: what the decoder may allocate
    // (4 bytes a pixel, and room for 16-bit sources).
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(decode_limits);
    let mut decoder = reader.into_decoder().map_err(|e| RenderError::Invalid(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(RenderError::Invalid("empty image".into()));
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(RenderError::TooManyPixels);
    }
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => RenderError::TooManyPixels,
        e => RenderError::Invalid(e.to_string()),
    })?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    let image = normalise(image);
    let ((rw, rh), (cw, ch)) = geometry(image.width(), image.height(), options);
    let image = if (rw, rh) == (image.width(), image.height()) && (cw, ch) == (rw, rh) {
        image
    } else {
        resize(&image, (rw, rh), (cw, ch))?
    };
    encode(&image, output, options.quality)
}

/// 8-bit RGB or RGBA: what the resizer and encoders take.
fn normalise(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => image,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Resizes to `size` and, for `cover`, crops the middle `crop` of it: the
/// crop is taken from the source so only the kept pixels are computed.
fn resize(image: &DynamicImage, size: (u32, u32), crop: (u32, u32)) -> Result<DynamicImage, RenderError> {
    let pixel = if image.color().has_alpha() { PixelType::U8x4 } else { PixelType::U8x3 };
    let (sx, sy) = (image.width() as f64 / size.0 as f64, image.height() as f64 / size.1 as f64);
    let (cw, ch) = (crop.0 as f64 * sx, crop.1 as f64 * sy);
    let left = (image.width() as f64 - cw) / 2.0;
    let top = (image.height() as f64 - ch) / 2.0;
    let mut dst = Image::new(crop.0, crop.1, pixel);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).crop(left, top, cw, ch);
    Resizer::new().resize(image, &mut dst, &options).map_err(|e| RenderError::Invalid(e.to_string()))?;
    let buffer = dst.into_vec();
    let out = if pixel == PixelType::U8x4 {
        image::RgbaImage::from_raw(crop.0, crop.1, buffer).map(DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(crop.0, crop.1, buffer).map(DynamicImage::ImageRgb8)
    };
    out.ok_or_else(|| RenderError::Invalid("resized buffer has the wrong size".into()))
}

fn encode(image: &DynamicImage, output: Output, quality: u8) -> Result<Vec<u8>, RenderError> {
    let failed = |e: image::ImageError| RenderError::Encode(e.to_string());
    let mut out = Vec::new();
    match output {
        Output::Webp => {
            let (w, h) = (image.width(), image.height());
            let encoder = match image {
                DynamicImage::ImageRgba8(rgba) => webp::Encoder::from_rgba(rgba.as_raw(), w, h),
                DynamicImage::ImageRgb8(rgb) => webp::Encoder::from_rgb(rgb.as_raw(), w, h),
                _ => return Err(RenderError::Encode("unexpected pixel layout".into())),
            };
            out.extend_from_slice(&encoder.encode(f32::from(quality)));
        }
        Output::Jpeg => {
            // JPEG has no alpha: flatten what a PNG or WebP source had.
            let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            rgb.write_with_encoder(encoder).map_err(failed)?;
        }
        Output::Png => image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).map_err(failed)?,
        Output::Gif => DynamicImage::ImageRgba8(image.to_rgba8())
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Gif)
            .map_err(failed)?,
        Output::Avif => {
            // rav1e at speed 8 (of 1-10): the rendering is cached, but the
            // first request waits for it; slower speeds shrink the file a
            // few percent for several times the time. One thread: renders
            // already run side by side under the transform permits.
            let encoder = image::codecs::avif::AvifEncoder::new_with_speed_quality(&mut out, AVIF_SPEED, quality)
                .with_num_threads(Some(1));
            image.write_with_encoder(encoder).map_err(failed)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits2 = Limits2 { max_pixels: 50_000_000, max_source_bytes: 25 << 20 };

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn dims(bytes: &[u8]) -> (ImageFormat, u32, u32) {
        let r = ImageReader::new(Cursor::new(bytes)).with_guessed_format().unwrap();
        let f = r.format().unwrap();
        let (w, h) = r.into_dimensions().unwrap();
        (f, w, h)
    }

    #[test]
    fn query_options_parse_clamp_and_refuse_as_storage_api() {
        let o =
            Options::from_query("width=300&height=9999&resize=contain&quality=55&format=origin&download=x").unwrap();
        assert_eq!(
            o,
            Options {
                width: Some(300),
                height: Some(2500),
                resize: Resize::Contain,
                quality: 55,
                format: Requested::Origin
            }
        );
        assert_eq!(Options::from_query("").unwrap(), Options::default());
        assert_eq!(Options::from_query("width=0").unwrap().width, None);
        assert_eq!(Options::from_query("width=abc").unwrap_err().0, "querystring/width must be integer");
        assert_eq!(Options::from_query("width=-1").unwrap_err().0, "querystring/width must be >= 0");
        assert!(Options::from_query("resize=crop").is_err());
        assert_eq!(Options::from_query("quality=10").unwrap_err().0, "querystring/quality must be >= 20");
        assert!(Options::from_query("quality=101").is_err());
        assert!(Options::from_query("format=tiff").is_err());
        assert_eq!(Options::from_query("format=avif").unwrap().format, Requested::Avif);
    }

    #[test]
    fn tokens_round_trip_and_read_storage_api_tokens() {
        let o = Options::from_query("width=200&height=100&resize=fill&quality=60&format=origin").unwrap();
        assert_eq!(o.to_token(), "height:100,width:200,resize:fill,quality:60,format:origin");
        assert_eq!(Options::from_token(&o.to_token()), o);
        let theirs = Options::from_token("height:200,width:200,resize:undefined");
        assert_eq!((theirs.width, theirs.height, theirs.resize), (Some(200), Some(200), Resize::Cover));
        let json = Options::from_json(&serde_json::json!({"width": 10, "resize": "contain"})).unwrap();
        assert_eq!((json.width, json.resize), (Some(10), Resize::Contain));
        assert!(Options::from_json(&serde_json::json!({"quality": 5})).is_err());
    }

    #[test]
    fn webp_only_for_clients_that_accept_it_unless_origin() {
        let auto = Options::default();
        assert_eq!(auto.output(Output::Jpeg, Some("image/avif,image/webp,*/*")), Output::Webp);
        assert_eq!(auto.output(Output::Jpeg, Some("*/*")), Output::Jpeg);
        assert_eq!(auto.output(Output::Png, None), Output::Png);
        let origin = Options { format: Requested::Origin, ..Options::default() };
        assert_eq!(origin.output(Output::Png, Some("image/webp")), Output::Png);
    }

    #[test]
    fn geometry_covers_contains_fills_and_never_enlarges() {
        let o = |w, h, r| Options { width: w, height: h, resize: r, ..Options::default() };
        assert_eq!(geometry(2000, 1500, &o(Some(500), None, Resize::Cover)), ((500, 375), (500, 375)));
        assert_eq!(geometry(2000, 1500, &o(None, Some(300), Resize::Cover)), ((400, 300), (400, 300)));
        assert_eq!(geometry(2000, 1500, &o(Some(300), Some(300), Resize::Cover)), ((400, 300), (300, 300)));
        assert_eq!(geometry(2000, 1500, &o(Some(300), Some(300), Resize::Contain)), ((300, 225), (300, 225)));
        assert_eq!(geometry(2000, 1500, &o(Some(300), Some(300), Resize::Fill)), ((300, 300), (300, 300)));
        assert_eq!(geometry(200, 100, &o(Some(500), None, Resize::Cover)), ((200, 100), (200, 100)));
    }

    #[test]
    fn renders_real_dimensions_and_formats() {
        let src = png(400, 300);
        let cover = Options::from_query("width=100&height=100").unwrap();
        let out = render(&src, &cover, Output::Webp, LIMITS).unwrap();
        assert_eq!(dims(&out), (ImageFormat::WebP, 100, 100));
        let contain = Options::from_query("width=100&height=100&resize=contain").unwrap();
        assert_eq!(dims(&render(&src, &contain, Output::Png, LIMITS).unwrap()), (ImageFormat::Png, 100, 75));
        assert_eq!(dims(&render(&src, &contain, Output::Jpeg, LIMITS).unwrap()), (ImageFormat::Jpeg, 100, 75));
    }

    #[test]
    fn refuses_non_images_and_pixel_bombs_before_decoding() {
        assert_eq!(render(b"hello, world", &Options::default(), Output::Png, LIMITS), Err(RenderError::Unsupported));
        // A PNG whose header claims 60000 x 60000 pixels (3.6 GP), and
        // nothing after the header: refused from the header alone.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&60000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(render(&bomb, &Options::default(), Output::Png, LIMITS), Err(RenderError::TooManyPixels));
        let small = Limits2 { max_pixels: 100, max_source_bytes: 25 << 20 };
        assert_eq!(render(&png(20, 20), &Options::default(), Output::Png, small), Err(RenderError::TooManyPixels));
        let tiny = Limits2 { max_pixels: 100, max_source_bytes: 10 };
        assert_eq!(render(&png(2, 2), &Options::default(), Output::Png, tiny), Err(RenderError::TooLarge));
    }
}

/// `FLUXBASE_BENCH_IMAGE=photo.jpg cargo test --release -p fluxbase-proxy
/// transform_speed -- --ignored --nocapture`: decode + resize to 500 px wide +
/// WebP q80 of one file, milliseconds per image on one core.
#[cfg(test)]
#[test]
#[ignore]
fn transform_speed() {
    let path = std::env::var("FLUXBASE_BENCH_IMAGE").expect("FLUXBASE_BENCH_IMAGE");
    let bytes = std::fs::read(path).unwrap();
    let options = Options { width: Some(500), ..Options::default() };
    let limits = Limits2 { max_pixels: 50_000_000, max_source_bytes: 25 << 20 };
    let n = 30;
    let start = std::time::Instant::now();
    let mut size = 0;
    for _ in 0..n {
        size = render(&bytes, &options, Output::Webp, limits).unwrap().len();
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!("image+fast_image_resize+libwebp webp: {ms:.2} ms/op ({n} ops, out {size} bytes)");
}
