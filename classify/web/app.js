// The page: load model.json and model.onnx once, then classify each photo picked with onnxruntime-web (wasm).
"use strict";
(() => {
  const TOP_K = 5;
  const CLOSE = 0.15; // top two probabilities closer than this: ask "A or B?" (as demo.py)
  const EXPOSED = ["knn+max-logit+exposed", "knn+max-logit+exposed-odds"]; // classify.menu.EXPOSED_METHODS
  const status = document.getElementById("status");
  let settings = null, session = null, bank = null, classified = 0;

  function show(text, state) {
    status.textContent = text;
    document.body.dataset.state = state;
  }

  async function decode(blob) {
    // Upright (EXIF orientation, as Pillow's exif_transpose), colours as stored (Pillow ignores ICC profiles).
    const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none",
      premultiplyAlpha: "none" });
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const data = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    bitmap.close();
    return { data, width: canvas.width, height: canvas.height };
  }

  // float16 bits → float32, for the bank (safetensors F16, little-endian): one table, built once.
  function halfTable() {
    const table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
      table[h] = sign * (exponent === 0 ? fraction * 2 ** -24 :
        exponent === 31 ? (fraction ? NaN : Infinity) : (1 + fraction / 1024) * 2 ** (exponent - 15));
    }
    return table;
  }

  // The bundle's menu.safetensors (classify/menu.py: "bank", N x D unit vectors, float16; with --not-on-menu also
  // "exposure_weight" (C+1) x D and "exposure_bias", float32) → {rows, dims, data, exposure: {weight, bias} | null}.
  // Read by hand: the format is an 8-byte header length, a JSON header, then the raw tensors.
  async function loadBank(file) {
    const buffer = await (await fetch(file)).arrayBuffer();
    const headerLength = Number(new DataView(buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
    const bytes = (name) => buffer.slice(8 + headerLength + header[name].data_offsets[0],
      8 + headerLength + header[name].data_offsets[1]);
    const { dtype, shape } = header.bank;
    if (dtype !== "F16" || shape.length !== 2) throw new Error(`unexpected on-menu statistics (${dtype} ${shape})`);
    const half = new Uint16Array(bytes("bank"));
    const table = halfTable(), data = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) data[i] = table[half[i]];
    let exposure = null;
    if (header.exposure_weight && header.exposure_bias) {
      if (header.exposure_weight.dtype !== "F32" || header.exposure_bias.dtype !== "F32")
        throw new Error("unexpected on-menu statistics (exposure map not float32)");
      exposure = { weight: new Float32Array(bytes("exposure_weight")), bias: new Float32Array(bytes("exposure_bias")) };
    }
    return { rows: shape[0], dims: shape[1], data, exposure };
  }

  // Predictor.menu_scores for one photo: the cosine similarity of its pooled features to their k-th nearest row of
  // the bank, mixed with the largest logit where the bundle says so (classify.menu.mixed), and the lower of that and
  // the not-on-the-menu classifier's score with --not-on-menu (classify.menu.exposed).
  function menuScore(features, logits) {
    const knn = nearest(features), mix = settings.menu.mix, method = settings.menu.method;
    if (method !== "knn+max-logit" && !EXPOSED.includes(method)) return knn;
    const rule = (knn - mix.knn_mean) / mix.knn_std +
      mix.max_logit_weight * (Math.max(...logits) - mix.max_logit_mean) / mix.max_logit_std;
    if (method === "knn+max-logit") return rule;
    return Math.min((rule - mix.rule_mean) / mix.rule_std,
      (exposureScore(features, method) - mix.exposure_mean) / mix.exposure_std);
  }

  // classify.menu.exposure_scores for one photo, from the linear map on its unit features: the log-odds of being on
  // the menu (log p(on it) - log p(not on it)), or -log p(not on the menu) for bundles made before 2026-12-06.
  function exposureScore(features, method) {
    const { weight, bias } = bank.exposure, outputs = bias.length, dims = features.length, norm = length(features);
    const logits = new Float64Array(outputs);
    for (let c = 0; c < outputs; c++) {
      let dot = 0;
      for (let j = 0, offset = c * dims; j < dims; j++) dot += weight[offset + j] * features[j];
      logits[c] = dot / norm + bias[c];
    }
    const notOnMenu = logits[outputs - 1]; // the last class, "not on the menu"
    if (method === "knn+max-logit+exposed") return logSumExp(logits) - notOnMenu; // -log softmax of the last
    return logSumExp(logits.subarray(0, outputs - 1)) - notOnMenu;
  }

  // log(sum(exp(values))) without overflow, as torch.logsumexp.
  function logSumExp(values) {
    const top = Math.max(...values);
    let total = 0;
    for (const value of values) total += Math.exp(value - top);
    return top + Math.log(total);
  }

  // The features' Euclidean length (1 for all zeros), which classify.menu.normalized divides by.
  function length(features) {
    let sum = 0;
    for (let j = 0; j < features.length; j++) sum += features[j] * features[j];
    return Math.sqrt(sum) || 1;
  }

  // classify.menu.scores for one photo: the cosine similarity of its pooled features to their k-th nearest row.
  function nearest(features) {
    const norm = length(features);
    const k = Math.max(1, Math.min(settings.menu.k || 1, bank.rows));
    const best = new Array(k).fill(-Infinity); // descending
    for (let i = 0; i < bank.rows; i++) {
      let dot = 0;
      for (let j = 0, offset = i * bank.dims; j < bank.dims; j++) dot += bank.data[offset + j] * features[j];
      dot /= norm;
      if (dot > best[k - 1]) {
        best[k - 1] = dot;
        best.sort((a, b) => b - a);
      }
    }
    return best[k - 1];
  }

  // One photo → {ranked: [{label, probability}] (all classes, most likely first), on_menu, menu_score} as
  // `classify predict --json` gives them (menu_score null where the bundle has no on-menu rule).
  async function classify(blob) {
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const image = await decode(blob);
    const input = platekitPreprocess.toInput(image.data, image.width, image.height,
      platekitPreprocess.isJpeg(bytes) ? bytes : null, settings);
    const side = settings.image_size;
    const feeds = { pixels: new ort.Tensor("float32", input, [1, 3, side, side]) };
    const outputs = await session.run(feeds);
    const probabilities = platekitPreprocess.softmax(outputs.logits.data, settings.temperature);
    const ranked = settings.classes.map((label, i) => ({ label, probability: probabilities[i] }))
      .sort((a, b) => b.probability - a.probability);
    const score = bank ? menuScore(outputs.features.data, outputs.logits.data) : null;
    return { ranked, on_menu: score === null || score >= settings.menu.threshold, menu_score: score };
  }

  const words = (name) => name.replaceAll("_", " ");

  function verdict({ ranked, on_menu }) {
    if (!on_menu) return `This doesn't look like any of my ${settings.classes.length} dishes. Closest guesses:`;
    const [first, second] = ranked;
    return second && first.probability - second.probability < CLOSE ? `${words(first.label)} or ` +
      `${words(second.label)}?` : "";
  }

  function render(result) {
    const top = result.ranked.slice(0, TOP_K);
    document.getElementById("verdict").textContent = verdict(result);
    document.getElementById("top1").textContent = words(top[0].label); // as the list below and the demo show names
    document.body.dataset.onMenu = String(result.on_menu);
    document.body.dataset.menuScore = result.menu_score === null ? "" : String(result.menu_score);
    const list = document.getElementById("top5");
    list.replaceChildren(...top.map(({ label, probability }) => {
      const item = document.createElement("li");
      item.textContent = `${words(label)} ${(100 * probability).toFixed(1)} %`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${(probability * 10).toFixed(2)}rem`; // to scale: whole rems drew 6 % and 11 % alike
      item.append(bar);
      return item;
    }));
    document.body.dataset.result = JSON.stringify(top);
  }

  async function onPick(event) {
    const file = event.target.files[0];
    if (!file) return;
    document.getElementById("photo").src = URL.createObjectURL(file);
    show("Classifying...", "busy");
    try {
      const started = performance.now();
      render(await classify(file));
      show(`Classified in ${Math.round(performance.now() - started)} ms on this device.`, "done");
    } catch (error) {
      document.getElementById("top1").textContent = "";
      document.getElementById("verdict").textContent = "";
      document.getElementById("top5").replaceChildren();
      show(`This file could not be read as a photo (${error.message || error}).`, "error");
    }
    document.body.dataset.count = String(++classified);
  }

  async function start() {
    try {
      settings = await (await fetch("model.json")).json();
      ort.env.wasm.wasmPaths = new URL(settings.ort.wasm, location.href).href; // import() wants a full URL
      // Threads need a cross-origin isolated page (COOP same-origin + COEP require-corp headers); plain static
      // hosting is not, and then one thread. Isolated, 2 threads took 341 ms a photo against 507 (bench/RESULTS.md).
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
      if (settings.menu) bank = await loadBank(settings.menu.file);
      if (bank && EXPOSED.includes(settings.menu.method) && !bank.exposure)
        throw new Error("its on-menu statistics lack the not-on-the-menu classifier");
    } catch (error) {
      show(`The model could not be loaded (${error.message || error}).`, "error");
      return;
    }
    document.getElementById("classes").textContent =
      `${settings.classes.length} dishes: ${settings.classes.map(words).join(", ")}.` +
      (bank ? " A photo of something else is said to be none of them." : "");
    document.getElementById("file").addEventListener("change", onPick);
    window.platekitClassify = classify; // for scripts and tests: a Blob in, {ranked, on_menu, menu_score} out
    show("Ready: pick a photo.", "ready");
  }

  start();
})();
