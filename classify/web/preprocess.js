// platekit's preprocessing in the browser, written to match classify's Pillow pipeline (classify/images.py: square):
// JPEG draft decode, centre square, Pillow's bicubic resize (reducing_gap 3), centre crop, mean/std, softmax / T.
"use strict";
const platekitPreprocess = (() => {
  const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed point for 8-bit resampling (libImaging/Resample.c)
  const ONE = 2 ** PRECISION_BITS;
  const REDUCING_GAP = 3.0;
  const BICUBIC_SUPPORT = 2.0;

  function bicubic(x) { // Pillow's bicubic kernel, a = -0.5
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
  }

  // Pillow's precompute_coeffs + normalize_coeffs_8bpc: for each output pixel, its first input pixel, how many, and
  // the integer weights.
  function coefficients(inSize, in0, in1, outSize) {
    const scale = (in1 - in0) / outSize;
    const filterScale = Math.max(scale, 1.0);
    const support = BICUBIC_SUPPORT * filterScale;
    const kSize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const weights = new Float64Array(outSize * kSize);
    for (let xx = 0; xx < outSize; xx++) {
      const center = in0 + (xx + 0.5) * scale;
      const ss = 1.0 / filterScale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0.0;
      const row = new Float64Array(kSize);
      for (let x = 0; x < xmax; x++) {
        const w = bicubic((x + xmin - center + 0.5) * ss);
        row[x] = w;
        ww += w;
      }
      for (let x = 0; x < xmax; x++) {
        const w = ww !== 0.0 ? row[x] / ww : row[x];
        weights[xx * kSize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return { kSize, bounds, weights };
  }

  function clip8(value) {
    if (value >= ONE * 256) return 255;
    if (value <= 0) return 0;
    return Math.floor(value / ONE);
  }

  // One pass of Pillow's two-pass resample over a 3-channel image; `horizontal` picks the axis.
  function pass(src, width, height, c, horizontal, offset, outWidth, outHeight) {
    const out = new Uint8Array(outWidth * outHeight * 3);
    const half = 2 ** (PRECISION_BITS - 1);
    for (let yy = 0; yy < outHeight; yy++) {
      for (let xx = 0; xx < outWidth; xx++) {
        const i = horizontal ? xx : yy;
        const first = c.bounds[i * 2], count = c.bounds[i * 2 + 1], k = i * c.kSize;
        let s0 = half, s1 = half, s2 = half;
        for (let t = 0; t < count; t++) {
          const p = horizontal ? ((yy + offset) * width + first + t) * 3 : ((first + t) * width + xx) * 3;
          const w = c.weights[k + t];
          s0 += src[p] * w; s1 += src[p + 1] * w; s2 += src[p + 2] * w;
        }
        const o = (yy * outWidth + xx) * 3;
        out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
      }
    }
    return out;
  }

  // Image.resize(size, BICUBIC, box) on an RGB array: ImagingResampleInner, horizontal pass then vertical.
  function resample(src, width, height, box, outWidth, outHeight) {
    const h = coefficients(width, box[0], box[2], outWidth);
    const v = coefficients(height, box[1], box[3], outHeight);
    const first = v.bounds[0];
    const last = v.bounds[outHeight * 2 - 2] + v.bounds[outHeight * 2 - 1];
    const needHorizontal = outWidth !== width || box[0] !== 0 || box[2] !== outWidth;
    const needVertical = outHeight !== height || box[1] !== 0 || box[3] !== outHeight;
    let pixels = src, w = width, hgt = height;
    if (needHorizontal) {
      for (let i = 0; i < outHeight; i++) v.bounds[i * 2] -= first;
      pixels = pass(src, width, height, h, true, first, outWidth, last - first);
      w = outWidth; hgt = last - first;
    }
    if (needVertical) pixels = pass(pixels, w, hgt, v, false, 0, w, outHeight);
    return pixels;
  }

  // Pillow's Image.reduce (block means) over `box`: used by resize when the image is over 3x the target.
  function reduce(src, width, fx, fy, box) {
    const outWidth = Math.ceil((box[2] - box[0]) / fx), outHeight = Math.ceil((box[3] - box[1]) / fy);
    const out = new Uint8Array(outWidth * outHeight * 3);
    for (let y = 0; y < outHeight; y++) {
      for (let x = 0; x < outWidth; x++) {
        const x0 = box[0] + x * fx, y0 = box[1] + y * fy;
        const x1 = Math.min(x0 + fx, box[2]), y1 = Math.min(y0 + fy, box[3]);
        const n = (x1 - x0) * (y1 - y0);
        for (let ch = 0; ch < 3; ch++) {
          let sum = 0;
          for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) sum += src[(yy * width + xx) * 3 + ch];
          out[(y * outWidth + x) * 3 + ch] = Math.floor(sum / n + 0.5);
        }
      }
    }
    return { pixels: out, width: outWidth, height: outHeight };
  }

  // Image.resize with reducing_gap (PIL/Image.py): reduce by whole factors first, then bicubic.
  function resize(src, width, height, box, size) {
    const fx = Math.trunc((box[2] - box[0]) / size / REDUCING_GAP) || 1;
    const fy = Math.trunc((box[3] - box[1]) / size / REDUCING_GAP) || 1;
    if (fx > 1 || fy > 1) {
      const supportX = (BICUBIC_SUPPORT - 0.5) * (box[2] - box[0]) / size;
      const supportY = (BICUBIC_SUPPORT - 0.5) * (box[3] - box[1]) / size;
      const safe = [Math.max(0, Math.trunc(box[0] - supportX)), Math.max(0, Math.trunc(box[1] - supportY)),
        Math.min(width, Math.ceil(box[2] + supportX)), Math.min(height, Math.ceil(box[3] + supportY))];
      const reduced = reduce(src, width, fx, fy, safe);
      box = [(box[0] - safe[0]) / fx, (box[1] - safe[1]) / fy, (box[2] - safe[0]) / fx, (box[3] - safe[1]) / fy];
      src = reduced.pixels; width = reduced.width; height = reduced.height;
    }
    return resample(src, width, height, box, size, size);
  }

  // Pillow's JPEG draft: libjpeg decodes at 1/8, 1/4 or 1/2 scale, the smallest still at least `size` on both
  // sides. The browser decodes at full size, so the scaled decode is rebuilt from its pixels. libjpeg's reduced
  // IDCTs (jidctred.c) give each output pixel the mean of the s x s pixels the full IDCT would give: a block mean
  // of luma. Subsampled chroma (4:2:0, 4:2:2) is decoded at its own resolution there, never upsampled: so the
  // browser's upsampling ("fancy": 3/4 of the nearest chroma sample, 1/4 of the next, per axis) is undone first by
  // solving for the samples (a tridiagonal system per row or column), then they are averaged down.
  function draftScale(width, height, size) {
    const scale = Math.min(Math.floor(width / size), Math.floor(height / size));
    for (const s of [8, 4, 2]) if (scale >= s) return s;
    return 1;
  }

  // A plane (Float64Array, width x height) averaged over blocks of `s` along x or y; the last block may be short.
  function blockMean(plane, width, height, s, alongX) {
    const outWidth = alongX ? Math.ceil(width / s) : width, outHeight = alongX ? height : Math.ceil(height / s);
    const out = new Float64Array(outWidth * outHeight);
    for (let y = 0; y < outHeight; y++) {
      for (let x = 0; x < outWidth; x++) {
        let sum = 0, n = 0;
        for (let t = 0; t < s; t++) {
          const xx = alongX ? x * s + t : x, yy = alongX ? y : y * s + t;
          if (xx >= width || yy >= height) break;
          sum += plane[yy * width + xx];
          n++;
        }
        out[y * outWidth + x] = sum / n;
      }
    }
    return { plane: out, width: outWidth, height: outHeight };
  }

  // Undo fancy upsampling along one axis of a plane already averaged in pairs: each value is
  // (c[i-1] + 6 c[i] + c[i+1]) / 8 of the chroma samples c (edges repeat their sample). Thomas algorithm.
  function unblur(plane, width, height, alongX) {
    const n = alongX ? width : height, lines = alongX ? height : width;
    const out = new Float64Array(plane.length), c = new Float64Array(n), d = new Float64Array(n);
    const at = (line, i) => (alongX ? line * width + i : i * width + line);
    for (let line = 0; line < lines; line++) {
      if (n === 1) { out[at(line, 0)] = plane[at(line, 0)]; continue; }
      for (let i = 0; i < n; i++) {
        const lower = i === 0 ? 0 : 1 / 8, upper = i === n - 1 ? 0 : 1 / 8;
        const diagonal = 6 / 8 + (i === 0 ? 1 / 8 : 0) + (i === n - 1 ? 1 / 8 : 0);
        const denominator = diagonal - lower * (i === 0 ? 0 : c[i - 1]);
        c[i] = upper / denominator;
        d[i] = (plane[at(line, i)] - lower * (i === 0 ? 0 : d[i - 1])) / denominator;
      }
      for (let i = n - 1; i >= 0; i--) {
        const value = d[i] - (i === n - 1 ? 0 : c[i] * out[at(line, i + 1)]);
        out[at(line, i)] = value;
      }
    }
    return out;
  }

  // The chroma subsampling of a JPEG (horizontal, vertical: 1 or 2) from its frame header; 1, 1 when none found.
  function jpegSubsampling(bytes) {
    let i = 2;
    while (i + 9 < bytes.length && bytes[i] === 0xff) {
      const marker = bytes[i + 1], length = (bytes[i + 2] << 8) | bytes[i + 3];
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        const components = bytes[i + 9];
        if (components !== 3) return [1, 1];
        const factors = [0, 1, 2].map((k) => bytes[i + 11 + 3 * k]);
        const h = factors.map((f) => f >> 4), v = factors.map((f) => f & 15);
        return [Math.max(...h) / Math.max(h[1], 1), Math.max(...v) / Math.max(v[1], 1)];
      }
      i += 2 + length;
    }
    return [1, 1];
  }

  function scaledDecode(src, width, height, s, subsampling) {
    const count = width * height;
    const planes = [new Float64Array(count), new Float64Array(count), new Float64Array(count)];
    for (let i = 0; i < count; i++) { // JFIF's YCbCr (libjpeg's jccolor.c), centred chroma
      const r = src[i * 3], g = src[i * 3 + 1], b = src[i * 3 + 2];
      planes[0][i] = 0.299 * r + 0.587 * g + 0.114 * b;
      planes[1][i] = -0.168735892 * r - 0.331264108 * g + 0.5 * b;
      planes[2][i] = 0.5 * r - 0.418687589 * g - 0.081312411 * b;
    }
    const reduced = planes.map((plane, k) => {
      let p = { plane, width, height };
      for (const alongX of [true, false]) {
        const factor = k === 0 ? 1 : subsampling[alongX ? 0 : 1];
        if (factor === 2) {
          p = blockMean(p.plane, p.width, p.height, 2, alongX);
          p = { ...p, plane: unblur(p.plane, p.width, p.height, alongX) };
          p = blockMean(p.plane, p.width, p.height, s / 2, alongX);
        } else {
          p = blockMean(p.plane, p.width, p.height, s, alongX);
        }
      }
      return p;
    });
    const { width: outWidth, height: outHeight } = reduced[0];
    const out = new Uint8Array(outWidth * outHeight * 3);
    const clamp = (v) => Math.min(255, Math.max(0, Math.round(v)));
    for (let i = 0; i < outWidth * outHeight; i++) {
      const y = reduced[0].plane[i], cb = reduced[1].plane[i], cr = reduced[2].plane[i];
      out[i * 3] = clamp(y + 1.402 * cr);
      out[i * 3 + 1] = clamp(y - 0.344136286 * cb - 0.714136286 * cr);
      out[i * 3 + 2] = clamp(y + 1.772 * cb);
    }
    return { pixels: out, width: outWidth, height: outHeight };
  }

  function rgb(rgba, count) {
    const out = new Uint8Array(count * 3);
    for (let i = 0; i < count; i++) {
      out[i * 3] = rgba[i * 4]; out[i * 3 + 1] = rgba[i * 4 + 1]; out[i * 3 + 2] = rgba[i * 4 + 2];
    }
    return out;
  }

  // Upright RGBA pixels (width x height) → the model's input: Float32Array 3 x S x S, normalized. `jpeg`: the
  // file's bytes when it is a JPEG (its header says how chroma was stored), else null.
  function toInput(rgba, width, height, jpeg, settings) {
    let pixels = rgb(rgba, width * height);
    const size = settings.resize_to;
    if (jpeg) {
      const s = draftScale(width, height, size);
      if (s > 1) ({ pixels, width, height } = scaledDecode(pixels, width, height, s, jpegSubsampling(jpeg)));
    }
    const side = Math.min(width, height);
    const left = (width - side) / 2, top = (height - side) / 2;
    const square = resize(pixels, width, height, [left, top, left + side, top + side], size);
    const crop = settings.image_size, offset = Math.floor((size - crop) / 2);
    const input = new Float32Array(3 * crop * crop);
    for (let ch = 0; ch < 3; ch++) {
      const mean = settings.mean[ch], std = settings.std[ch];
      for (let y = 0; y < crop; y++) {
        for (let x = 0; x < crop; x++) {
          const value = square[((y + offset) * size + x + offset) * 3 + ch];
          input[ch * crop * crop + y * crop + x] = (value / 255 - mean) / std;
        }
      }
    }
    return input;
  }

  function softmax(logits, temperature) {
    const scaled = Array.from(logits, (v) => v / temperature);
    const high = Math.max(...scaled);
    const exps = scaled.map((v) => Math.exp(v - high));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((v) => v / total);
  }

  function isJpeg(bytes) {
    return bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  }

  return { toInput, softmax, isJpeg, resize, draftScale, scaledDecode, jpegSubsampling };
})();
