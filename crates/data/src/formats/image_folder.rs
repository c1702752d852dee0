//! Image classification as an image folder: `<root>/<split>/<class>/<name>.png|jpg`.
