//! SVG to PNG with resvg, using only the embedded DejaVu Sans: no system font is looked up,
//! so a machine with no fonts installed (a CI container) renders the same text.

use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

/// The font database: DejaVu Sans regular and bold, standing in for every generic family.
fn fontdb() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(dejavu::sans::regular().to_vec());
        db.load_font_data(dejavu::sans::bold().to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        db.set_serif_family("DejaVu Sans");
        db.set_monospace_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

/// Rasterises `svg` to a PNG of `(width, height)` pixels on a white background.
pub(crate) fn svg_to_png(svg: &str, (width, height): (u32, u32)) -> Result<Vec<u8>, String> {
    let opt = usvg::Options {
        font_family: "DejaVu Sans".into(),
        fontdb: fontdb(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("cannot parse the drawn SVG: {e}"))?;
    let mut pixmap = tiny_skia::Pixmap::new(width, height)
        .ok_or_else(|| format!("cannot allocate a {width}x{height} image"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let ts = tree.size();
    let transform = tiny_skia::Transform::from_scale(width as f32 / ts.width(), height as f32 / ts.height());
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| format!("cannot encode the PNG: {e}"))
}
