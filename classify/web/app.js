// The page: load model.json and model.onnx once, then classify each photo picked with onnxruntime-web (wasm).
"use strict";
(() => {
  const TOP_K = 5;
  const status = document.getElementById("status");
  let settings = null, session = null, classified = 0;

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

  // One photo → [{label, probability}], most likely first (all classes).
  async function classify(blob) {
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const image = await decode(blob);
    const input = platekitPreprocess.toInput(image.data, image.width, image.height,
      platekitPreprocess.isJpeg(bytes) ? bytes : null, settings);
    const side = settings.image_size;
    const feeds = { pixels: new ort.Tensor("float32", input, [1, 3, side, side]) };
    const logits = (await session.run(feeds)).logits.data;
    const probabilities = platekitPreprocess.softmax(logits, settings.temperature);
    return settings.classes.map((label, i) => ({ label, probability: probabilities[i] }))
      .sort((a, b) => b.probability - a.probability);
  }

  function render(ranked) {
    const top = ranked.slice(0, TOP_K);
    document.getElementById("top1").textContent = top[0].label;
    const list = document.getElementById("top5");
    list.replaceChildren(...top.map(({ label, probability }) => {
      const item = document.createElement("li");
      item.textContent = `${label.replaceAll("_", " ")} ${(100 * probability).toFixed(1)} %`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.round(probability * 10)}rem`;
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
      document.getElementById("top5").replaceChildren();
      show(`This file could not be read as a photo (${error.message || error}).`, "error");
    }
    document.body.dataset.count = String(++classified);
  }

  async function start() {
    try {
      settings = await (await fetch("model.json")).json();
      ort.env.wasm.wasmPaths = new URL(settings.ort.wasm, location.href).href; // import() wants a full URL
      ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page, which plain static hosting is not
      session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
    } catch (error) {
      show(`The model could not be loaded (${error.message || error}).`, "error");
      return;
    }
    document.getElementById("classes").textContent =
      `${settings.classes.length} dishes: ${settings.classes.map((c) => c.replaceAll("_", " ")).join(", ")}.` +
      (settings.menu_skipped ? " The model's check for photos of other things (on the menu or not) needs its " +
        "backbone features, which this page does not have: every photo gets its closest dish." : "");
    document.getElementById("file").addEventListener("change", onPick);
    window.platekitClassify = classify; // for scripts and tests: a Blob in, the ranked classes out
    show("Ready: pick a photo.", "ready");
  }

  start();
})();
