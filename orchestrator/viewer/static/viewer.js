// The `headforge view` page: the folder's manifest (/manifest.json) drawn as a 3D view (three.js: GLB with
// GLTFLoader, mesh PLY with PLYLoader, 3DGS PLY with @mkkellogg/gaussian-splats-3d), the report's
// warnings and figures, and the folder's images. document.body.dataset.state goes "loading" -> "ready"
// (the first asset drawn) or "error"; the headless-browser test waits on it.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { PLYLoader } from 'three/addons/loaders/PLYLoader.js';
import * as GaussianSplats3D from 'gaussian-splats-3d';

const FOV_DEG = 30;
const SETTLE_FRAMES = 3;        // frames in a row with the asset drawable before the page says "ready"

const el = (tag, attrs = {}, text = '') => {
  const e = document.createElement(tag);
  Object.assign(e, attrs);
  if (text) e.textContent = text;
  return e;
};
const fileUrl = (name) => '/files/' + name.split('/').map(encodeURIComponent).join('/');

// ---- the 3D view -------------------------------------------------------------------------------------
const canvas = document.getElementById('view3d');
const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
renderer.setSize(canvas.clientWidth, canvas.clientHeight, false);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x30343a);
const camera = new THREE.PerspectiveCamera(FOV_DEG, canvas.clientWidth / canvas.clientHeight, 0.01, 100);
const controls = new OrbitControls(camera, canvas);
controls.enableDamping = true;
scene.add(new THREE.AmbientLight(0xffffff, 1.6));
const keyLight = new THREE.DirectionalLight(0xffffff, 1.4);   // rides with the camera: the side in view is lit
camera.add(keyLight);
keyLight.position.set(0.5, 0.6, 0);
scene.add(camera);
camera.position.set(0, 0, 5);   // frontal until an asset is framed

let current = null;             // {name, object, dispose, drawable: () => bool}
let framesDrawable = -1;        // frames drawn in a row with current drawable; -1 = not (yet)

function frame(radius, center = new THREE.Vector3()) {
  // frontal view: camera on +Z looking at the centre (azimuth 0 of the project's orbit convention)
  const distance = 1.15 * radius / Math.sin(THREE.MathUtils.degToRad(FOV_DEG / 2));
  camera.position.copy(center).add(new THREE.Vector3(0, 0, distance));
  camera.near = distance / 100;
  camera.far = distance * 10;
  camera.updateProjectionMatrix();
  controls.target.copy(center);
  controls.update();
}

function frameBox(box) {
  const sphere = box.getBoundingSphere(new THREE.Sphere());
  frame(sphere.radius || 1, sphere.center);
}

function framedObject(object) {
  frameBox(new THREE.Box3().setFromObject(object));
  return { object, dispose: () => object.traverse((o) => { o.geometry?.dispose(); o.material?.dispose?.(); }),
           drawable: () => true };
}

async function loadGltf(name) {
  const gltf = await new GLTFLoader().loadAsync(fileUrl(name));
  return framedObject(gltf.scene);
}

async function loadMeshPly(name) {
  const geometry = await new PLYLoader().loadAsync(fileUrl(name));
  const colours = geometry.hasAttribute('color');
  const material = geometry.index
    ? new THREE.MeshStandardMaterial({ vertexColors: colours, roughness: 1, side: THREE.DoubleSide })
    : new THREE.PointsMaterial({ vertexColors: colours, size: 0.01 });
  if (geometry.index && !geometry.hasAttribute('normal')) geometry.computeVertexNormals();
  return framedObject(geometry.index ? new THREE.Mesh(geometry, material) : new THREE.Points(geometry, material));
}

async function loadGaussians(name) {
  const splats = new GaussianSplats3D.DropInViewer({
    gpuAcceleratedSort: false, sharedMemoryForWorkers: false, integerBasedSort: false,
    sphericalHarmonicsDegree: 0,
    // all splats at once (the default reveal grows a visible region over seconds: a screenshot shows a part)
    sceneRevealMode: GaussianSplats3D.SceneRevealMode.Instant,
  });
  await splats.addSplatScene(fileUrl(name), { format: GaussianSplats3D.SceneFormat.Ply, showLoadingUI: false,
                                              progressiveLoad: false, splatAlphaRemovalThreshold: 1 });
  const mesh = splats.splatMesh;
  const box = new THREE.Box3();
  const centre = new THREE.Vector3();
  for (let i = 0; i < mesh.getSplatCount(); i++) {
    mesh.getSplatCenter(i, centre);
    box.expandByPoint(centre);
  }
  frameBox(box);
  const v = splats.viewer;
  // the splats drawn are those the last depth sort kept in view: sort again from the framed camera
  if (v.camera) await v.runSplatSort(true, true);
  // drawable once the first depth sort (a web worker) has come back: until then nothing is drawn. These
  // are the pinned package's (0.4.7) viewer fields.
  return { object: splats, dispose: () => splats.dispose(),
           drawable: () => v.splatRenderReady && !v.sortRunning && v.lastSplatSortCount > 0 };
}

const LOADERS = { gltf: loadGltf, mesh_ply: loadMeshPly, gaussians: loadGaussians };

async function show(asset, buttons) {
  setStatus(`loading ${asset.name}…`);
  document.body.dataset.state = 'loading';
  if (current) {
    scene.remove(current.object);
    await current.dispose();
    current = null;
  }
  for (const [name, b] of buttons) b.classList.toggle('on', name === asset.name);
  const loaded = await LOADERS[asset.kind](asset.name);
  scene.add(loaded.object);
  current = { name: asset.name, ...loaded };
  document.body.dataset.asset = asset.name;
  framesDrawable = -1;
  setStatus(`${asset.name} (${asset.kind === 'gaussians' ? 'Gaussians' : 'mesh'})`);
}

function setStatus(text) {
  document.getElementById('status').textContent = text;
}

function animate() {
  requestAnimationFrame(animate);
  controls.update();
  renderer.render(scene, camera);
  if (!current || document.body.dataset.state !== 'loading') return;
  // consecutive frames: a re-sort after the camera was framed makes the splats undrawable again
  framesDrawable = current.drawable() ? framesDrawable + 1 : -1;
  if (framesDrawable >= SETTLE_FRAMES) document.body.dataset.state = 'ready';
}

// ---- the report ----------------------------------------------------------------------------------------
const fmt = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v));
const isScalar = (v) => v === null || ['number', 'string', 'boolean'].includes(typeof v);

function table(rows, head) {
  const t = el('table');
  if (head) {
    const tr = el('tr');
    head.forEach((h) => tr.append(el('th', {}, h)));
    t.append(tr);
  }
  for (const row of rows) {
    const tr = el('tr');
    row.forEach((c, i) => tr.append(el(i === 0 && !head ? 'th' : 'td', {}, fmt(c))));
    t.append(tr);
  }
  return t;
}

function showReport(m) {
  const box = document.getElementById('figures');
  const r = m.report;
  if (!r) {
    box.append(el('p', {}, 'no report.json: no figures to show'));
    return;
  }
  box.append(el('h2', {}, 'Result'));
  box.append(table([['recipe', r.recipe ?? '?'], ['result is real', r.result_is_real ?? 'not stated']]));
  const metrics = r.metrics ?? {};
  const scalars = Object.entries(metrics).filter(([, v]) => isScalar(v));
  if (scalars.length) {
    box.append(el('h2', {}, 'Metrics'));
    box.append(table(scalars));
  }
  if (metrics.views) {
    box.append(el('h2', {}, 'Views (identity vs the input)'));
    const cols = ['azimuth_deg', 'face_found', 'cosine', 'distance', 'same_person'];
    box.append(table(Object.entries(metrics.views).map(([k, v]) => [k, ...cols.map((c) => v[c] ?? '-')]),
                     ['view', ...cols]));
  }
  if (r.timings_s) {
    box.append(el('h2', {}, 'Timings (s)'));
    box.append(table(Object.entries(r.timings_s)));
  }
  const models = Object.entries(r.models ?? {}).flatMap(([service, v]) =>
    Array.isArray(v) ? v.map((x) => [service, x.role ?? '', x.backend ?? '', x.name ?? '', x.provenance ?? ''])
      : [[service, '', '', isScalar(v) ? v : Object.entries(v).map(([k, x]) => `${k}=${x}`).join(' '), '']]);
  if (models.length) {
    box.append(el('h2', {}, 'Models'));
    box.append(table(models, ['service', 'role', 'backend', 'name', 'provenance']));
  }
}

function showHeader(m) {
  document.title = `HeadForge view: ${m.title}`;
  document.getElementById('title').textContent = `HeadForge: ${m.title}`;
  const banner = document.getElementById('banner');
  if (m.banner) {
    banner.textContent = m.banner;
    banner.hidden = false;
  }
  const list = document.getElementById('warnings');
  m.warnings.forEach((w) => list.append(el('li', {}, `warning: ${w}`)));
}

function showImages(m) {
  const box = document.getElementById('images');
  for (const name of m.images) {
    const f = el('figure');
    f.append(el('img', { src: fileUrl(name), alt: name, loading: 'lazy' }), el('figcaption', {}, name));
    box.append(f);
  }
}

async function main() {
  const response = await fetch('/manifest.json');
  if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status}: ${await response.text()}`);
  const m = await response.json();
  showHeader(m);
  showReport(m);
  showImages(m);
  const nav = document.getElementById('assets');
  const buttons = new Map();
  for (const asset of m.assets) {
    const b = el('button', { type: 'button' }, asset.name);
    b.addEventListener('click', () => show(asset, buttons).catch(fail));
    buttons.set(asset.name, b);
    nav.append(b);
  }
  animate();
  const wanted = new URLSearchParams(location.search).get('asset');
  const first = m.assets.find((a) => a.name === wanted) ?? m.assets[0];
  if (first) {
    await show(first, buttons);
  } else {
    setStatus('no 3D asset in this folder');
    document.body.dataset.state = 'ready';
  }
}

function fail(e) {
  console.error('headforge view:', e);
  setStatus(`error: ${e.message ?? e}`);
  document.body.dataset.state = 'error';
}

main().catch(fail);
