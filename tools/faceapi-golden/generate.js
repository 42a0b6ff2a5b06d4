// Regenerates ZMagic's own face-api golden data with the package's own JavaScript.
//
//   cd tools/faceapi-golden && npm ci && node generate.js
//
// Runtime: @vladmandic/face-api 1.7.15, dist/face-api.node-wasm.js (the CommonJS Node build that needs no
// tfjs-node), with @tensorflow/tfjs 4.22.0 set to the pure-JS 'cpu' backend. Weights: the package's model/ folder.
// Input: shared/golden/images/astronaut.png (decoded with pngjs) and synthetic images
// x[h, w, c] = (7h + 13w + 29c) mod 256. Output: one small JSON file under
// tests/ZMagic.Encoders.Tests/FaceApi/golden/, read by FaceApiOwnGoldenTests.cs.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const { PNG } = require('pngjs');

const repo = path.resolve(__dirname, '..', '..');
const imagePath = process.env.ZMAGIC_ASTRONAUT_PNG || path.resolve(repo, '..', 'shared', 'golden', 'images', 'astronaut.png');
const outDir = path.join(repo, 'tests', 'ZMagic.Encoders.Tests', 'FaceApi', 'golden');
const modelDir = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');

const arr = (t) => Array.from(t.dataSync());
const round = (v) => Number(v); // keep full double precision in JSON

function decodePng(file) {
  const png = PNG.sync.read(fs.readFileSync(file));
  const rgb = new Int32Array(png.width * png.height * 3);
  for (let i = 0, j = 0; i < png.data.length; i += 4, j += 3) {
    rgb[j] = png.data[i]; rgb[j + 1] = png.data[i + 1]; rgb[j + 2] = png.data[i + 2];
  }
  return tf.tensor3d(rgb, [png.height, png.width, 3], 'int32');
}

function synthetic(width, height) {
  const v = new Int32Array(width * height * 3);
  for (let h = 0; h < height; h++) for (let w = 0; w < width; w++) for (let c = 0; c < 3; c++) v[(h * width + w) * 3 + c] = (7 * h + 13 * w + 29 * c) % 256;
  return tf.tensor3d(v, [height, width, 3], 'int32');
}

async function detections(image, inputSize) {
  const dets = await faceapi.detectAllFaces(image, new faceapi.TinyFaceDetectorOptions({ inputSize, scoreThreshold: 0.5 }));
  const [H, W] = image.shape;
  return dets.map((d) => {
    const b = d.box;
    const crop = d.forSize(W, H).box.clipAtImageBorders(W, H);
    return { score: d.score, box_px_xywh: [b.x, b.y, b.width, b.height], crop_rect_xywh: [crop.x, crop.y, crop.width, crop.height] };
  });
}

// Every face net on one (already cropped) image tensor, through the package's own preprocessing (toNetInput).
async function faceNets(image) {
  const ni = await faceapi.toNetInput(image);
  const out = {};
  out.lm68_raw = arr(faceapi.nets.faceLandmark68Net.runNet(ni));
  out.lm68_post = arr(faceapi.nets.faceLandmark68Net.forwardInput(ni));
  out.lm68tiny_raw = arr(faceapi.nets.faceLandmark68TinyNet.runNet(ni));
  out.lm68tiny_post = arr(faceapi.nets.faceLandmark68TinyNet.forwardInput(ni));
  out.expr_logits = arr(faceapi.nets.faceExpressionNet.runNet(ni));
  out.expr_probs = Array.from(Object.values(await faceapi.nets.faceExpressionNet.predictExpressions(image)).slice(0, 7));
  const ag = faceapi.nets.ageGenderNet.runNet(ni);
  out.age = arr(ag.age)[0];
  out.gender_logits = arr(ag.gender);
  const p = await faceapi.nets.ageGenderNet.predictAgeAndGender(image);
  out.gender = p.gender;
  out.gender_probability = p.genderProbability;
  out.descriptor = Array.from(await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(image));
  return out;
}

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();
  for (const net of ['tinyFaceDetector', 'faceLandmark68Net', 'faceLandmark68TinyNet', 'faceRecognitionNet', 'ageGenderNet', 'faceExpressionNet']) {
    await faceapi.nets[net].loadFromDisk(modelDir);
  }

  const cases = [];

  // 1. The full astronaut photo: detection at three input sizes, then every net on the 416 detection's crop,
  //    on its mirror and on a crop shifted by (+4, +3) px.
  const photo = decodePng(imagePath);
  const [H, W] = photo.shape;
  const det = {};
  for (const size of [416, 320, 224]) det[String(size)] = await detections(photo, size);
  const [cx, cy, cw, ch] = det['416'][0].crop_rect_xywh;
  const crop = tf.slice3d(photo, [cy, cx, 0], [ch, cw, 3]);
  const mirror = tf.reverse(crop, 1);
  const shifted = tf.slice3d(photo, [cy + 3, cx + 4, 0], [ch, cw, 3]);
  const face = await faceNets(crop);
  const dMirror = Array.from(await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(mirror));
  const dShift = Array.from(await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(shifted));
  cases.push({
    name: 'astronaut_full',
    image: 'shared/golden/images/astronaut.png',
    image_wh: [W, H],
    detections: det,
    face_crop_rect_xywh: [cx, cy, cw, ch],
    face,
    mirror_descriptor_distance: faceapi.euclideanDistance(face.descriptor, dMirror),
    shifted_crop: { shift_xy: [4, 3], descriptor_distance: faceapi.euclideanDistance(face.descriptor, dShift) },
  });

  // 2. Synthetic non-square images: exercise pad-to-square (uneven split) and both resize directions,
  //    and the raw detector output at inputSize 224.
  for (const [w, h] of [[130, 97], [90, 150]]) {
    const img = synthetic(w, h);
    const raw = await faceapi.nets.tinyFaceDetector.forward(img, 224);
    cases.push({
      name: `synthetic_${w}x${h}`,
      synthetic: { width: w, height: h, formula: 'x[h, w, c] = (7h + 13w + 29c) mod 256' },
      face: await faceNets(img),
      detector_224_raw_nhwc: { shape: raw.shape, values: arr(raw) },
    });
  }

  const doc = {
    generator: 'tools/faceapi-golden/generate.js',
    package: '@vladmandic/face-api@1.7.15 (dist/face-api.node-wasm.js)',
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    node: process.version,
    tolerance: { abs: 1e-4, rel: 1e-4 },
    tolerance_per_output: { lm68_post: { abs: 2e-4, rel: 1e-4 }, lm68tiny_post: { abs: 2e-4, rel: 1e-4 }, box_px_xywh: { abs: 5e-2, rel: 1e-3 }, detector_224_raw_nhwc: { abs: 3e-4, rel: 1e-4 } },
    notes: [
      'face.* are computed on the image itself (the crop for astronaut_full), through the package preprocessing: pad to square (centered), bilinear resize (alignCorners=false, halfPixelCenters=false), mean subtraction, /255.',
      'expr order: neutral, happy, sad, angry, fearful, disgusted, surprised; gender_logits index 0 = male.',
      'detections use detectAllFaces(image, TinyFaceDetectorOptions{inputSize, scoreThreshold: 0.5}); crop_rect_xywh = det.forSize(W, H).box.clipAtImageBorders(W, H) (what extractFaceTensors slices).',
    ],
    cases,
  };
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'faceapi-own-golden.json');
  fs.writeFileSync(file, JSON.stringify(doc, null, 1) + '\n');
  console.log(`wrote ${file} (${fs.statSync(file).size} bytes)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
