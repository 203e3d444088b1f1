/* Classify images in the browser with an exported bees_ants model (onnxruntime-web): the one copy
 * of the page-side code, used by the app's Predict tab and by the exported web page alike.
 *
 * Why the preprocessing is written out here instead of using the canvas's own scaling: the model
 * was trained and is served on Pillow's resize (antialiased bilinear or bicubic, 8-bit fixed
 * point, horizontal pass first) followed by torchvision's centre crop. A canvas scales with
 * whatever filter the browser picks, which shifts confidences; this reproduces Pillow's arithmetic,
 * so the page and the server see the same pixels (up to how each decodes a JPEG).
 *
 *   window.beesAnts.classify(imageOrCanvas) -> Promise of [{label, probability}, ...], best first
 *
 * The runtime's files are fetched with their Subresource Integrity hashes (window.beesAntsRuntime:
 * {base, integrity, flavours}), from a CDN or from a local folder: the same bytes either way.
 */
(function () {
  "use strict";
  if (window.beesAnts) return;  // the app's head may be injected more than once

  const PRECISION_BITS = 22;  // Pillow's fixed point for 8-bit resampling (32 - 8 - 2)
  const FILTERS = {
    bilinear: { support: 1, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
    bicubic: { support: 2, f: (x) => {  // Pillow's cubic, a = -0.5
      const a = -0.5; x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    } },
  };

  // Python's round(): halves go to the even neighbour (Pillow's sizes and torchvision's crop use it).
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
  }

  // Pillow's precompute_coeffs + normalize_coeffs_8bpc for the outputs [first, first + count).
  function coefficients(inSize, outSize, first, count, filter) {
    const scale = inSize / outSize, filterscale = Math.max(scale, 1);
    const support = filter.support * filterscale, ss = 1 / filterscale;
    const taps = [];
    for (let o = first; o < first + count; o++) {
      const center = (o + 0.5) * scale;
      const lo = Math.max(Math.trunc(center - support + 0.5), 0);
      const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
      const w = [];
      let sum = 0;
      for (let x = lo; x < hi; x++) { const v = filter.f((x - center + 0.5) * ss); w.push(v); sum += v; }
      const fixed = w.map((v) => {
        const k = (sum !== 0 ? v / sum : v) * (1 << PRECISION_BITS);
        return k < 0 ? Math.trunc(k - 0.5) : Math.trunc(k + 0.5);
      });
      taps.push({ lo, w: fixed });
    }
    return taps;
  }

  const clip8 = (v) => Math.min(255, Math.max(0, Math.floor(v / (1 << PRECISION_BITS))));

  /* RGBA pixels (w x h) -> the model's input: uint8 RGB, CHW, crop x crop: the shorter side
   * resized to prep.resize_size with prep.interpolation, then the centre crop, computed only for
   * the pixels the crop keeps (Pillow computes the same values for the whole image). */
  function preprocess(rgba, w, h, prep) {
    const crop = prep.crop_size, scale = prep.resize_size / Math.min(w, h);
    const rw = Math.max(1, roundHalfEven(w * scale)), rh = Math.max(1, roundHalfEven(h * scale));
    const left = roundHalfEven((rw - crop) / 2), top = roundHalfEven((rh - crop) / 2);
    const out = new Uint8Array(3 * crop * crop), plane = crop * crop;
    if (prep.interpolation === "nearest") {  // Pillow's nearest: the source pixel under the centre
      for (let y = 0; y < crop; y++) {
        const sy = Math.min(h - 1, Math.floor((y + top + 0.5) * h / rh));
        for (let x = 0; x < crop; x++) {
          const sx = Math.min(w - 1, Math.floor((x + left + 0.5) * w / rw)), i = 4 * (sy * w + sx);
          for (let c = 0; c < 3; c++) out[c * plane + y * crop + x] = rgba[i + c];
        }
      }
      return out;
    }
    const filter = FILTERS[prep.interpolation] || FILTERS.bilinear;
    const horizontal = rw !== w, vertical = rh !== h;
    const cols = horizontal ? coefficients(w, rw, left, crop, filter) : null;
    const rows = vertical ? coefficients(h, rh, top, crop, filter) : null;
    // The source rows the vertical pass reads; the horizontal pass (first, as in Pillow) makes them.
    const y0 = vertical ? rows[0].lo : top;
    const y1 = vertical ? rows[crop - 1].lo + rows[crop - 1].w.length : top + crop;
    const half = 1 << (PRECISION_BITS - 1);
    const mid = new Uint8Array(3 * crop * (y1 - y0));  // horizontally resized rows y0..y1, crop columns
    for (let y = y0; y < y1; y++) {
      for (let x = 0; x < crop; x++) {
        const m = 3 * ((y - y0) * crop + x);
        if (!horizontal) { const i = 4 * (y * w + x + left); mid[m] = rgba[i]; mid[m + 1] = rgba[i + 1]; mid[m + 2] = rgba[i + 2]; continue; }
        const { lo, w: k } = cols[x];
        let r = half, g = half, b = half;
        for (let t = 0; t < k.length; t++) { const i = 4 * (y * w + lo + t); r += rgba[i] * k[t]; g += rgba[i + 1] * k[t]; b += rgba[i + 2] * k[t]; }
        mid[m] = clip8(r); mid[m + 1] = clip8(g); mid[m + 2] = clip8(b);
      }
    }
    for (let y = 0; y < crop; y++) {
      for (let x = 0; x < crop; x++) {
        let r, g, b;
        if (!vertical) { const m = 3 * ((y + top - y0) * crop + x); r = mid[m]; g = mid[m + 1]; b = mid[m + 2]; }
        else {
          const { lo, w: k } = rows[y];
          r = half; g = half; b = half;
          for (let t = 0; t < k.length; t++) { const m = 3 * ((lo + t - y0) * crop + x); r += mid[m] * k[t]; g += mid[m + 1] * k[t]; b += mid[m + 2] * k[t]; }
          r = clip8(r); g = clip8(g); b = clip8(b);
        }
        const o = y * crop + x;
        out[o] = r; out[plane + o] = g; out[2 * plane + o] = b;
      }
    }
    return out;
  }

  // Any drawable (img, video, canvas, ImageBitmap) -> its RGBA pixels at its own size.
  let scratch = null;
  function pixels(source) {
    const w = source.videoWidth || source.naturalWidth || source.width;
    const h = source.videoHeight || source.naturalHeight || source.height;
    if (!w || !h) throw new Error("the image has no pixels yet");
    if (source instanceof HTMLCanvasElement) {
      return { rgba: source.getContext("2d").getImageData(0, 0, w, h).data, w, h };
    }
    scratch = scratch || document.createElement("canvas");
    if (scratch.width !== w || scratch.height !== h) { scratch.width = w; scratch.height = h; }
    const ctx = scratch.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(source, 0, 0, w, h);
    return { rgba: ctx.getImageData(0, 0, w, h).data, w, h };
  }

  function addScript(src, integrity) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src; s.integrity = integrity; s.crossOrigin = "anonymous";
      s.onload = resolve;
      s.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.appendChild(s);
    });
  }

  async function verifiedFetch(url, integrity) {
    const response = await fetch(url, { integrity });  // rejects when the bytes do not match
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response;
  }

  /* onnxruntime-web, once: its WebGPU build where the browser offers a GPU adapter, else its
   * WebAssembly build. The glue module and the .wasm are fetched with their hashes and handed
   * over in memory, so the runtime never loads an unchecked file by itself. */
  let runtime = null;
  function loadRuntime() {
    if (runtime) return runtime;
    runtime = (async () => {
      const cfg = window.beesAntsRuntime;
      if (!cfg) throw new Error("no onnxruntime-web location configured");
      let flavour = "wasm";
      if (cfg.flavours.webgpu && navigator.gpu) {
        try { if (await navigator.gpu.requestAdapter()) flavour = "webgpu"; } catch (e) { /* no GPU: WebAssembly */ }
      }
      const files = cfg.flavours[flavour], url = (name) => cfg.base + name;
      await addScript(url(files.script), cfg.integrity[files.script]);
      const glue = await (await verifiedFetch(url(files.mjs), cfg.integrity[files.mjs])).text();
      const binary = await (await verifiedFetch(url(files.wasm), cfg.integrity[files.wasm])).arrayBuffer();
      const ort = window.ort;
      ort.env.wasm.wasmPaths = { mjs: URL.createObjectURL(new Blob([glue], { type: "text/javascript" })) };
      ort.env.wasm.wasmBinary = binary;
      // Threads need a cross-origin isolated page (SharedArrayBuffer), which neither page is.
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      return { ort, flavour };
    })();
    runtime.catch(() => { runtime = null; });  // a later try may succeed (network back)
    return runtime;
  }

  let model = null;  // {key, session, info, backend}

  /* The model at `url` (its description `info`: class_names, preprocessing, key) becomes the one
   * classify() uses; the same key again keeps the session already made. Resolves to the backend
   * it runs on: "webgpu" or "wasm". */
  async function load(url, info) {
    if (model && info.key && model.key === info.key) return model.backend;
    const { ort, flavour } = await loadRuntime();
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    let session = null, backend = "wasm";
    if (flavour === "webgpu") {
      try { session = await ort.InferenceSession.create(bytes, { executionProviders: ["webgpu"] }); backend = "webgpu"; }
      catch (e) { console.warn("bees_ants: WebGPU session failed, using WebAssembly", e); }
    }
    session = session || await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    model = { key: info.key, session, info, backend };
    return backend;
  }

  // Sessions run one call at a time: frames and dropped images take turns.
  let queue = Promise.resolve();
  function classify(source) {
    const run = queue.then(async () => {
      if (!model) throw new Error("no model loaded");
      const { ort } = await loadRuntime();
      const { rgba, w, h } = pixels(source);
      const prep = model.info.preprocessing, crop = prep.crop_size;
      const input = new ort.Tensor("uint8", preprocess(rgba, w, h, prep), [1, 3, crop, crop]);
      const result = await model.session.run({ [model.session.inputNames[0]]: input });
      const probs = result[model.session.outputNames[0]].data;
      return model.info.class_names.map((label, i) => ({ label, probability: probs[i] }))
        .sort((a, b) => b.probability - a.probability);
    });
    queue = run.catch(() => {});
    return run;
  }

  function showTop(list, ranked, shown) {
    list.replaceChildren(...ranked.slice(0, shown).map(({ label, probability }) => {
      const li = document.createElement("li");
      const bar = document.createElement("span");
      bar.className = "bees-ants-bar"; bar.style.width = `${(100 * probability).toFixed(1)}%`;
      const text = document.createElement("span");
      text.textContent = `${label} ${(100 * probability).toFixed(1)}%`;
      li.append(bar, text);
      return li;
    }));
  }

  /* A webcam in `root` (elements with data-role video / top / fps / status), classified frame
   * after frame as fast as the model runs (one frame in flight, the newest drawn each time). */
  const live = { stream: null, frames: [] };
  async function startCamera(root, shown = 3) {
    stopCamera(root);
    const video = root.querySelector("[data-role=video]");
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    video.srcObject = live.stream;
    await video.play();
    const stream = live.stream, top = root.querySelector("[data-role=top]"), fps = root.querySelector("[data-role=fps]");
    live.frames = [];
    while (live.stream === stream) {
      const ranked = await classify(video);
      if (live.stream !== stream) break;
      const now = performance.now();
      live.frames.push(now);
      while (live.frames[0] < now - 2000) live.frames.shift();
      showTop(top, ranked, shown);
      const seconds = (now - live.frames[0]) / 1000;
      if (seconds > 0) fps.textContent = `${((live.frames.length - 1) / seconds).toFixed(1)} frames/s, in this browser (${model.backend === "webgpu" ? "WebGPU" : "WebAssembly"})`;
      await new Promise((resolve) => requestAnimationFrame(resolve));  // the page gets to paint
    }
  }

  function stopCamera(root) {
    if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
    live.stream = null;
    const video = root && root.querySelector("[data-role=video]");
    if (video) video.srcObject = null;
  }

  function framesPerSecond() {
    const f = live.frames;
    return f.length > 1 ? (f.length - 1) / ((f[f.length - 1] - f[0]) / 1000) : 0;
  }

  window.beesAnts = { classify, load, preprocess, startCamera, stopCamera, showTop, framesPerSecond,
                      loadRuntime, get model() { return model && { key: model.key, backend: model.backend, info: model.info }; } };
})();
