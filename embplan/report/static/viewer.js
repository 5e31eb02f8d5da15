/* embplan slice viewer: axial, coronal and sagittal slices of the plan's CT (or density) with the dose wash,
   structure outlines and isodose lines; the dose under the cursor. Vanilla JS, canvas, no network.
   Data: the JSON block #viewer-data (see embplan/report/viewer.py): arrays in canonical (z, y, x) order with every
   index increasing towards patient left (x), posterior (y) and superior (z); deflated and base64-encoded. */
(function () {
  "use strict";
  var root = document.getElementById("viewer");
  var block = document.getElementById("viewer-data");
  if (!root || !block) { return; }
  var D = JSON.parse(block.textContent);
  var NZ = D.shape[0], NY = D.shape[1], NX = D.shape[2];
  var SZ = D.spacing_mm[0], SY = D.spacing_mm[1], SX = D.spacing_mm[2];
  var readout = root.querySelector(".viewer-readout");

  function fail(msg) {
    readout.textContent = "The slice viewer cannot start: " + msg;
    readout.className += " viewer-error";
  }
  if (typeof DecompressionStream === "undefined") {
    fail("this browser lacks DecompressionStream (use a current Chrome, Edge, Firefox or Safari).");
    return;
  }

  function inflate(b64) {
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buf) { return new Uint8Array(buf); });
  }

  var N = NZ * NY * NX;
  var state = {
    bg: null, dose: null, maps: [], masks: [], wash: true, opacity: 0.45,
    win: null, slice: { axial: D.centre[0], coronal: D.centre[1], sagittal: D.centre[2] }
  };

  // ---------------------------------------------------------------------------------------- colour maps
  function turbo(t) {  // Turbo colour map, polynomial approximation (Mikhailov 2019, Apache-2.0)
    t = Math.max(0, Math.min(1, t));
    var r = 34.61 + t * (1172.33 - t * (10793.56 - t * (33300.12 - t * (38394.49 - t * 14825.05))));
    var g = 23.31 + t * (557.33 + t * (1225.33 - t * (3574.96 - t * (1073.77 + t * 707.56))));
    var b = 27.2 + t * (3211.1 - t * (15327.97 - t * (27814 - t * (22569.18 - t * 6838.66))));
    return [Math.max(0, Math.min(255, r)), Math.max(0, Math.min(255, g)), Math.max(0, Math.min(255, b))];
  }
  var LUT = [];
  for (var q = 0; q < 256; q++) { LUT.push(turbo(q / 255)); }

  // ---------------------------------------------------------------------------------------- geometry
  // view -> (width, height, pixel width mm, pixel height mm, index of (col, row, slice) in (z, y, x))
  var VIEWS = {
    axial: { w: NX, h: NY, pw: SX, ph: SY, n: NZ, title: "Axial", edges: ["A", "P", "R", "L"] },
    coronal: { w: NX, h: NZ, pw: SX, ph: SZ, n: NY, title: "Coronal", edges: ["S", "I", "R", "L"] },
    sagittal: { w: NY, h: NZ, pw: SY, ph: SZ, n: NX, title: "Sagittal", edges: ["S", "I", "A", "P"] }
  };
  function voxel(view, c, r, s) {  // -> [z, y, x]
    if (view === "axial") { return [s, r, c]; }
    if (view === "coronal") { return [NZ - 1 - r, s, c]; }
    return [NZ - 1 - r, c, s];
  }
  function lin(z, y, x) { return (z * NY + y) * NX + x; }
  function doseAt(i) { return state.dose ? state.dose[i] * D.dose.step_gy : null; }
  function dosesAt(i) {  // every dose map under the cursor: "label value Gy"
    return D.doses.map(function (m, k) {
      return state.maps[k] ? m.label + " " + fmtGy(state.maps[k][i] * m.step_gy) + " Gy" : null;
    }).filter(function (t) { return t !== null; });
  }
  function bgAt(i) {
    if (!state.bg) { return null; }
    var B = D.background;
    return B.lo + (state.bg[i] / 255) * (B.hi - B.lo);
  }

  // ---------------------------------------------------------------------------------------- controls
  var sFieldset = root.querySelector(".v-structures");
  D.structures.forEach(function (s, k) {
    var lab = document.createElement("label");
    lab.innerHTML = '<input type="checkbox"><span class="swatch"></span>';
    lab.querySelector("input").checked = s.visible;
    lab.querySelector("input").setAttribute("data-structure", s.name);
    lab.querySelector(".swatch").style.background = s.colour;
    lab.appendChild(document.createTextNode(" " + s.label));
    lab.querySelector("input").addEventListener("change", function (e) { s.visible = e.target.checked; drawAll(); });
    sFieldset.appendChild(lab);
  });
  var iFieldset = root.querySelector(".v-isodoses");
  if (!D.dose) { iFieldset.style.display = "none"; }
  D.isodoses.forEach(function (lv) {
    var lab = document.createElement("label");
    lab.innerHTML = '<input type="checkbox"><span class="swatch dashed"></span>';
    lab.querySelector("input").checked = lv.visible;
    lab.querySelector("input").setAttribute("data-isodose", String(lv.gy));
    lab.querySelector(".swatch").style.borderColor = lv.colour;
    lab.appendChild(document.createTextNode(" " + lv.gy.toFixed(0) + " Gy (" + lv.label + ")"));
    lab.querySelector("input").addEventListener("change", function (e) { lv.visible = e.target.checked; drawAll(); });
    iFieldset.appendChild(lab);
  });
  root.querySelector(".v-wash").addEventListener("change", function (e) { state.wash = e.target.checked; drawAll(); });
  root.querySelector(".v-opacity").addEventListener("input", function (e) {
    state.opacity = Number(e.target.value) / 100; drawAll();
  });
  var winSel = root.querySelector(".v-window");
  var WINDOWS = D.background && D.background.kind === "CT"
    ? [["soft tissue", -160, 240], ["liver", -50, 200], ["lung", -1000, -200], ["bone", -200, 1000]]
    : D.background ? [["density", D.background.window[0], D.background.window[1]]] : [];
  WINDOWS.forEach(function (w, k) {
    var o = document.createElement("option"); o.value = String(k); o.textContent = w[0]; winSel.appendChild(o);
  });
  if (!WINDOWS.length) { winSel.parentNode.style.display = "none"; }
  state.win = WINDOWS.length ? WINDOWS[0] : null;
  winSel.addEventListener("change", function () { state.win = WINDOWS[Number(winSel.value)]; drawAll(); });

  // ---------------------------------------------------------------------------------------- views
  var holder = root.querySelector(".viewer-views");
  var CELL = 340;
  var views = {};
  Object.keys(VIEWS).forEach(function (name) {
    var V = VIEWS[name];
    var wmm = V.w * V.pw, hmm = V.h * V.ph;
    var scale = Math.min(CELL / wmm, CELL / hmm);
    var fig = document.createElement("figure");
    fig.className = "view view-" + name;
    fig.innerHTML = '<div class="view-title"></div><div class="view-canvas"><canvas></canvas>' +
      '<span class="edge top"></span><span class="edge bottom"></span><span class="edge left"></span>' +
      '<span class="edge right"></span></div><input type="range" class="v-slider" min="0" step="1">';
    var canvas = fig.querySelector("canvas");
    canvas.width = Math.max(1, Math.round(wmm * scale));
    canvas.height = Math.max(1, Math.round(hmm * scale));
    canvas.setAttribute("data-view", name);
    canvas.tabIndex = 0;
    var e = fig.querySelectorAll(".edge");
    for (var k = 0; k < 4; k++) { e[k].textContent = V.edges[k]; }
    var slider = fig.querySelector(".v-slider");
    slider.max = String(V.n - 1);
    slider.setAttribute("aria-label", V.title + " slice");
    holder.appendChild(fig);
    var off = document.createElement("canvas");
    off.width = V.w; off.height = V.h;
    views[name] = { V: V, canvas: canvas, ctx: canvas.getContext("2d"), off: off, offctx: off.getContext("2d"),
                    fig: fig, slider: slider, sx: canvas.width / V.w, sy: canvas.height / V.h };
    slider.addEventListener("input", function () { setSlice(name, Number(slider.value)); });
    canvas.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      setSlice(name, state.slice[name] + (ev.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    canvas.addEventListener("keydown", function (ev) {
      if (ev.key === "ArrowUp" || ev.key === "ArrowRight" || ev.key === "PageUp") { setSlice(name, state.slice[name] + 1); ev.preventDefault(); }
      if (ev.key === "ArrowDown" || ev.key === "ArrowLeft" || ev.key === "PageDown") { setSlice(name, state.slice[name] - 1); ev.preventDefault(); }
    });
    canvas.addEventListener("mousemove", function (ev) { probe(name, ev); });
    canvas.addEventListener("click", function (ev) {
      var v = pointer(name, ev);
      if (!v) { return; }
      state.slice.axial = v[0]; state.slice.coronal = v[1]; state.slice.sagittal = v[2];
      drawAll();
    });
  });

  function pointer(name, ev) {
    var W = views[name], rect = W.canvas.getBoundingClientRect();
    var c = Math.floor((ev.clientX - rect.left) / rect.width * W.V.w);
    var r = Math.floor((ev.clientY - rect.top) / rect.height * W.V.h);
    if (c < 0 || r < 0 || c >= W.V.w || r >= W.V.h) { return null; }
    return voxel(name, c, r, state.slice[name]);
  }

  function setSlice(name, s) {
    var n = VIEWS[name].n;
    s = Math.max(0, Math.min(n - 1, s));
    if (s === state.slice[name]) { return; }
    state.slice[name] = s;
    draw(name);
  }

  function fmtGy(v) { return v === null ? "–" : (v > 0 && v < 0.05 ? "< 0.1" : v.toFixed(1)); }

  function probe(name, ev) {
    var v = pointer(name, ev);
    if (!v) { return; }
    var i = lin(v[0], v[1], v[2]);
    var A = D.affine, x = v[2], y = v[1], z = v[0];
    var p = [0, 1, 2].map(function (r) { return A[r][0] * x + A[r][1] * y + A[r][2] * z + A[r][3]; });
    var inside = D.structures.filter(function (s) { return s.mask && s.mask[i]; }).map(function (s) { return s.label; });
    var txt = D.doses.length > 1 ? dosesAt(i).join(" · ") : "Dose " + fmtGy(doseAt(i)) + " Gy";
    if (state.bg) {
      var b = bgAt(i);
      txt += " · " + D.background.kind + " " + (D.background.kind === "CT" ? Math.round(b) + " HU (≈)" : b.toFixed(2) + " " + D.background.unit);
    }
    txt += " · voxel (x " + x + ", y " + y + ", z " + z + ") · patient LPS (" + p.map(function (t) { return t.toFixed(1); }).join(", ") + ") mm";
    txt += " · in: " + (inside.length ? inside.join(", ") : "no structure");
    readout.textContent = txt;
    readout.setAttribute("data-dose-gy", doseAt(i) === null ? "" : String(doseAt(i)));
  }

  // ---------------------------------------------------------------------------------------- drawing
  function draw(name) {
    var W = views[name], V = W.V, s = state.slice[name];
    W.slider.value = String(s);
    W.canvas.setAttribute("data-slice", String(s));
    W.fig.querySelector(".view-title").textContent = V.title + " " + (s + 1) + " / " + V.n;
    var img = W.offctx.createImageData(V.w, V.h), px = img.data;
    var lo = state.win ? state.win[1] : 0, hi = state.win ? state.win[2] : 1;
    var bgLo = D.background ? D.background.lo : 0, bgHi = D.background ? D.background.hi : 1;
    var dmax = D.dose ? D.dose.max_gy : 1, floor = 0.02 * dmax, a = state.opacity;
    var idx = new Int32Array(V.w * V.h);
    for (var r = 0; r < V.h; r++) {
      for (var c = 0; c < V.w; c++) {
        var v = voxel(name, c, r, s), i = lin(v[0], v[1], v[2]), o = (r * V.w + c);
        idx[o] = i;
        var g = 0;
        if (state.bg) {
          var val = bgLo + (state.bg[i] / 255) * (bgHi - bgLo);
          g = Math.max(0, Math.min(255, (val - lo) / (hi - lo) * 255));
        }
        var R = g, G = g, B = g;
        if (state.wash && state.dose) {
          var d = state.dose[i] * D.dose.step_gy;
          if (d > floor) {
            var col = LUT[Math.min(255, Math.floor(d / dmax * 255))];
            R = (1 - a) * g + a * col[0]; G = (1 - a) * g + a * col[1]; B = (1 - a) * g + a * col[2];
          }
        }
        px[4 * o] = R; px[4 * o + 1] = G; px[4 * o + 2] = B; px[4 * o + 3] = 255;
      }
    }
    W.offctx.putImageData(img, 0, 0);
    var ctx = W.ctx;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(W.off, 0, 0, W.canvas.width, W.canvas.height);
    // outlines: a segment wherever a voxel edge separates inside from outside
    function outline(test, colour, dashed) {
      ctx.beginPath();
      for (var r = 0; r < V.h; r++) {
        for (var c = 0; c < V.w; c++) {
          var here = test(idx[r * V.w + c]);
          if (c + 1 < V.w && here !== test(idx[r * V.w + c + 1])) {
            ctx.moveTo((c + 1) * W.sx, r * W.sy); ctx.lineTo((c + 1) * W.sx, (r + 1) * W.sy);
          }
          if (r + 1 < V.h && here !== test(idx[(r + 1) * V.w + c])) {
            ctx.moveTo(c * W.sx, (r + 1) * W.sy); ctx.lineTo((c + 1) * W.sx, (r + 1) * W.sy);
          }
        }
      }
      ctx.strokeStyle = colour; ctx.lineWidth = 1.5;
      ctx.setLineDash(dashed ? [4, 3] : []);
      ctx.stroke();
    }
    D.structures.forEach(function (st) {
      if (st.visible && st.mask) { outline(function (i) { return st.mask[i] === 1; }, st.colour, false); }
    });
    if (state.dose) {
      D.isodoses.forEach(function (lv) {
        if (!lv.visible) { return; }
        var t = lv.gy / D.dose.step_gy;
        outline(function (i) { return state.dose[i] >= t; }, lv.colour, true);
      });
    }
    ctx.setLineDash([]);
  }
  function drawAll() { Object.keys(views).forEach(draw); }

  function colourbar() {
    var bar = root.querySelector(".viewer-colourbar");
    if (!D.dose) { bar.style.display = "none"; return; }
    var c = document.createElement("canvas"); c.width = 256; c.height = 12;
    var x = c.getContext("2d");
    for (var k = 0; k < 256; k++) { var col = LUT[k]; x.fillStyle = "rgb(" + col.join(",") + ")"; x.fillRect(k, 0, 1, 12); }
    bar.appendChild(document.createTextNode("0 Gy "));
    bar.appendChild(c);
    bar.appendChild(document.createTextNode(" " + D.dose.max_gy.toFixed(1) + " Gy (" + D.dose.label +
      "; wash hidden below 2 % of the maximum)"));
  }

  // ---------------------------------------------------------------------------------------- load
  var jobs = [];
  if (D.background) { jobs.push(inflate(D.background.data).then(function (b) { state.bg = b; })); }
  (D.doses || []).forEach(function (m, k) {
    jobs.push(inflate(m.data).then(function (b) {
      var d = new Uint16Array(N);
      for (var i = 0; i < N; i++) { d[i] = b[i] | (b[N + i] << 8); }
      state.maps[k] = d;
      if (k === 0) { state.dose = d; }
    }));
  });
  D.structures.forEach(function (s) {
    jobs.push(inflate(s.data).then(function (b) {
      var m = new Uint8Array(N);
      for (var i = 0; i < N; i++) { m[i] = (b[i >> 3] >> (7 - (i & 7))) & 1; }
      s.mask = m;
    }));
  });
  Promise.all(jobs).then(function () {
    colourbar();
    drawAll();
    root.setAttribute("data-ready", "1");
  }).catch(function (err) { fail(String(err)); });
})();
