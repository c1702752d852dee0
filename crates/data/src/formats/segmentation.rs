//! Semantic segmentation: `<root>/<split>/images/<stem>.png|jpg` with a class-index mask
//! `<root>/<split>/masks/<stem>.png` (8-bit grey, value = class index, 255 = ignore) and the
//! class names in `<root>/classes.txt`, one per line, index = line number from 0.
