/* litert_run: run a .tflite file through the LiteRT C API (libLiteRt.so), as an Android or Linux app does.
 *
 *   litert_run MODEL.tflite --info                      one JSON line: the signature's inputs and outputs
 *   litert_run MODEL.tflite IN_DIR OUT_DIR [RUNS]       IN_DIR/<input>.f32 -> OUT_DIR/<output>.f32, JSON line
 *   litert_run MODEL.tflite --image PHOTO OUT_DIR [RUNS]
 *                                                       a PNG or JPEG -> OUT_DIR/<output>.f32 (and image.f32, the
 *                                                       input the model got), JSON line with the message read
 *
 * Tensors travel as raw little-endian float32 files named by the signature's names (image.f32,
 * message.f32 -> mask_logit.f32, bit_logits.f32, ...). With --image, the photo is read as the project's
 * Python runners read it (core/images.py read_rgb, runtime/route.py resize_aa): decoded with stb_image
 * (PNG exactly; JPEG decoders differ from libjpeg-turbo's by a level or so), EXIF orientation applied
 * (a JPEG's APP1 or a PNG's eXIf chunk), alpha dropped, grayscale repeated to RGB, 8-bit / 255 and a
 * 16-bit grayscale PNG / 65535, then resized to the model's input with torch's bilinear resize with
 * antialias (align_corners=False), the official route's resize. An integer input or output (an int8-full file)
 * is quantized and dequantized here with the per-tensor scale and zero point the file records, so every
 * variant takes and gives float32, as runtime/litert_runner.py does. RUNS > 1 runs the model that many
 * times and reports each run's milliseconds (the outputs are the last run's). Exit status: 0 on success,
 * 2 on bad arguments or input, 3 when LiteRT refuses the file or the run, with one line on stderr.
 *
 * The ai-edge-litert wheel ships libLiteRt.so without headers, so the few declarations used are written
 * below from LiteRT's public C API (litert/c/litert_*.h); only the first two fields of
 * LiteRtRankedTensorType are read (element type, then rank and dimensions), which are the same in every
 * LiteRT 2.x layout. Build: see runtime/native_build.py (gcc on x86-64, zig cc for aarch64).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* stb_image (public domain, Sean Barrett; Debian's libstb-dev): found with -isystem, so its own code is
 * compiled without this file's warning flags. Only the two formats the runner promises are built in. */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

/* ---- declarations from LiteRT's public C API ---------------------------------------------------- */
typedef int LiteRtStatus; /* 0 = kLiteRtStatusOk */
typedef size_t LiteRtParamIndex;
typedef struct LiteRtEnvironmentT *LiteRtEnvironment;
typedef struct LiteRtModelT *LiteRtModel;
typedef struct LiteRtOptionsT *LiteRtOptions;
typedef struct LiteRtCompiledModelT *LiteRtCompiledModel;
typedef struct LiteRtSignatureT *LiteRtSignature;
typedef struct LiteRtTensorT *LiteRtTensor;
typedef struct LiteRtTensorBufferT *LiteRtTensorBuffer;
typedef struct LiteRtTensorBufferRequirementsT *LiteRtTensorBufferRequirements;
typedef struct {
  float scale;
  int64_t zero_point;
} LiteRtQuantizationPerTensor;
enum { kElementFloat32 = 1, kElementUInt8 = 3, kElementInt8 = 9 };
enum { kQuantizationPerTensor = 1 };
enum { kHwAcceleratorCpu = 1 };
enum { kLockRead = 0, kLockWrite = 1 };

LiteRtStatus LiteRtCreateEnvironment(int num_options, const void *options, LiteRtEnvironment *env);
void LiteRtDestroyEnvironment(LiteRtEnvironment env);
LiteRtStatus LiteRtCreateModelFromFile(LiteRtEnvironment env, const char *filename, LiteRtModel *model);
void LiteRtDestroyModel(LiteRtModel model);
LiteRtStatus LiteRtGetNumModelSignatures(LiteRtModel model, LiteRtParamIndex *num);
LiteRtStatus LiteRtGetModelSignature(LiteRtModel model, LiteRtParamIndex index, LiteRtSignature *signature);
LiteRtStatus LiteRtGetSignatureKey(LiteRtSignature signature, const char **key);
LiteRtStatus LiteRtGetNumSignatureInputs(LiteRtSignature signature, LiteRtParamIndex *num);
LiteRtStatus LiteRtGetNumSignatureOutputs(LiteRtSignature signature, LiteRtParamIndex *num);
LiteRtStatus LiteRtGetSignatureInputName(LiteRtSignature signature, LiteRtParamIndex index, const char **name);
LiteRtStatus LiteRtGetSignatureOutputName(LiteRtSignature signature, LiteRtParamIndex index, const char **name);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex index, LiteRtTensor *tensor);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex index, LiteRtTensor *tensor);
LiteRtStatus LiteRtGetRankedTensorType(LiteRtTensor tensor, void *ranked_tensor_type);
LiteRtStatus LiteRtGetQuantizationTypeId(LiteRtTensor tensor, int *type_id);
LiteRtStatus LiteRtGetPerTensorQuantization(LiteRtTensor tensor, LiteRtQuantizationPerTensor *q);
LiteRtStatus LiteRtCreateOptions(LiteRtOptions *options);
void LiteRtDestroyOptions(LiteRtOptions options);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(LiteRtOptions options, int accelerators);
LiteRtStatus LiteRtCreateCompiledModel(LiteRtEnvironment env, LiteRtModel model, LiteRtOptions options,
                                       LiteRtCompiledModel *compiled);
void LiteRtDestroyCompiledModel(LiteRtCompiledModel compiled);
LiteRtStatus LiteRtGetCompiledModelInputBufferRequirements(LiteRtCompiledModel compiled, LiteRtParamIndex signature,
                                                           LiteRtParamIndex index, LiteRtTensorBufferRequirements *req);
LiteRtStatus LiteRtGetCompiledModelOutputBufferRequirements(LiteRtCompiledModel compiled, LiteRtParamIndex signature,
                                                            LiteRtParamIndex index, LiteRtTensorBufferRequirements *req);
LiteRtStatus LiteRtGetTensorBufferRequirementsBufferSize(LiteRtTensorBufferRequirements req, size_t *size);
LiteRtStatus LiteRtCreateManagedTensorBufferFromRequirements(LiteRtEnvironment env, const void *tensor_type,
                                                             LiteRtTensorBufferRequirements req, LiteRtTensorBuffer *buffer);
LiteRtStatus LiteRtGetTensorBufferPackedSize(LiteRtTensorBuffer buffer, size_t *size);
LiteRtStatus LiteRtLockTensorBuffer(LiteRtTensorBuffer buffer, void **host_addr, int lock_mode);
LiteRtStatus LiteRtUnlockTensorBuffer(LiteRtTensorBuffer buffer);
void LiteRtDestroyTensorBuffer(LiteRtTensorBuffer buffer);
LiteRtStatus LiteRtRunCompiledModel(LiteRtCompiledModel compiled, LiteRtParamIndex signature, size_t num_inputs,
                                    LiteRtTensorBuffer *inputs, size_t num_outputs, LiteRtTensorBuffer *outputs);

/* ---- the runner --------------------------------------------------------------------------------- */
#define MAX_TENSORS 16
#define TYPE_BYTES 256 /* room for any LiteRtRankedTensorType layout (72 bytes in LiteRT 2.x) */

typedef struct {
  const char *name;
  int element_type;
  unsigned rank;
  int32_t dims[8];
  int quantized;
  LiteRtQuantizationPerTensor q;
  _Alignas(64) unsigned char type[TYPE_BYTES];
  size_t bytes;
  void *data;
  LiteRtTensorBuffer buffer;
} Tensor;

static void fail(int code, const char *what, LiteRtStatus status) {
  if (status)
    fprintf(stderr, "litert_run: %s (LiteRT status %d)\n", what, status);
  else
    fprintf(stderr, "litert_run: %s\n", what);
  exit(code);
}

#define CHECK(call, what)            \
  do {                               \
    LiteRtStatus s_ = (call);        \
    if (s_ != 0) fail(3, (what), s_); \
  } while (0)

static size_t element_size(int type) {
  switch (type) {
    case kElementFloat32: return 4;
    case kElementInt8:
    case kElementUInt8: return 1;
    default: return 0;
  }
}

static const char *dtype_name(int type) {
  switch (type) {
    case kElementFloat32: return "float32";
    case kElementInt8: return "int8";
    case kElementUInt8: return "uint8";
    default: return "unsupported";
  }
}

static void describe(LiteRtTensor t, const char *name, Tensor *out) {
  memset(out, 0, sizeof *out);
  out->name = name;
  CHECK(LiteRtGetRankedTensorType(t, out->type), "reading a tensor type");
  memcpy(&out->element_type, out->type, sizeof(int));
  uint32_t rank_word;
  memcpy(&rank_word, out->type + 4, sizeof rank_word);
  out->rank = rank_word & 0x7f; /* a 7-bit field in some layouts, a whole word in others; rank <= 8 */
  if (out->rank > 8) fail(3, "a tensor of rank > 8", 0);
  memcpy(out->dims, out->type + 8, sizeof(int32_t) * out->rank);
  int qtype = 0;
  if (LiteRtGetQuantizationTypeId(t, &qtype) == 0 && qtype == kQuantizationPerTensor) {
    CHECK(LiteRtGetPerTensorQuantization(t, &out->q), "reading a tensor's quantization");
    out->quantized = 1;
  }
}

static size_t elements(const Tensor *t) {
  size_t n = 1;
  for (unsigned i = 0; i < t->rank; i++) n *= (size_t)(t->dims[i] > 0 ? t->dims[i] : 1);
  return n;
}

static void print_tensor(const Tensor *t) {
  printf("{\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", t->name, dtype_name(t->element_type));
  for (unsigned i = 0; i < t->rank; i++) printf("%s%d", i ? ", " : "", t->dims[i]);
  printf("]");
  if (t->quantized) printf(", \"scale\": %.9g, \"zero_point\": %lld", t->q.scale, (long long)t->q.zero_point);
  printf("}");
}

/* Store float32 values into an input: as they are, or with the file's own scale and zero point, rounded
 * and clamped to the integer range. */
static void store_input(Tensor *t, const float *x) {
  size_t n = elements(t);
  if (t->element_type == kElementFloat32) {
    memcpy(t->data, x, n * sizeof(float));
    return;
  }
  int lo = t->element_type == kElementInt8 ? -128 : 0, hi = t->element_type == kElementInt8 ? 127 : 255;
  for (size_t i = 0; i < n; i++) {
    long v = lrintf(x[i] / t->q.scale) + (long)t->q.zero_point;
    v = v < lo ? lo : (v > hi ? hi : v);
    if (t->element_type == kElementInt8)
      ((int8_t *)t->data)[i] = (int8_t)v;
    else
      ((uint8_t *)t->data)[i] = (uint8_t)v;
  }
}

static void read_input(const char *dir, Tensor *t) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.f32", dir, t->name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "litert_run: cannot open input %s: %s\n", path, strerror(errno));
    exit(2);
  }
  size_t n = elements(t);
  float *x = malloc(n * sizeof(float));
  if (!x) fail(3, "out of memory", 0);
  size_t got = fread(x, sizeof(float), n, f);
  int extra = fgetc(f) != EOF;
  fclose(f);
  if (got != n || extra) {
    fprintf(stderr, "litert_run: %s holds %s%zu float32 values; input '%s' takes %zu\n", path, extra ? "more than " : "", got,
            t->name, n);
    exit(2);
  }
  store_input(t, x);
  free(x);
}

static void write_output(const char *dir, const Tensor *t);

/* ---- a photo as the model's input ---------------------------------------------------------------- */
typedef struct {
  int width, height, orientation; /* after orientation; the EXIF value applied (1 = none) */
  float *rgb;                     /* height x width x 3, in [0, 1] */
} Photo;

static unsigned read16(const unsigned char *p, int big) { return big ? (unsigned)(p[0] << 8 | p[1]) : (unsigned)(p[1] << 8 | p[0]); }
static unsigned long read32(const unsigned char *p, int big) {
  return big ? (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3]
             : (unsigned long)p[3] << 24 | (unsigned long)p[2] << 16 | (unsigned long)p[1] << 8 | p[0];
}

/* The orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 when absent or malformed. */
static int tiff_orientation(const unsigned char *t, size_t n) {
  if (n < 8 || !((t[0] == 'I' && t[1] == 'I') || (t[0] == 'M' && t[1] == 'M'))) return 1;
  int big = t[0] == 'M';
  if (read16(t + 2, big) != 42) return 1;
  unsigned long ifd = read32(t + 4, big);
  if (ifd + 2 > n) return 1;
  unsigned count = read16(t + ifd, big);
  for (unsigned i = 0; i < count; i++) {
    size_t e = ifd + 2 + 12 * (size_t)i;
    if (e + 12 > n) return 1;
    if (read16(t + e, big) == 0x0112 && read16(t + e + 2, big) == 3) {
      unsigned v = read16(t + e + 8, big);
      return v >= 1 && v <= 8 ? (int)v : 1;
    }
  }
  return 1;
}

/* EXIF orientation of a JPEG (APP1 "Exif") or a PNG (eXIf chunk), as Pillow's ImageOps.exif_transpose reads it. */
static int file_orientation(const unsigned char *b, size_t n) {
  if (n > 4 && b[0] == 0xFF && b[1] == 0xD8) {
    size_t i = 2;
    while (i + 4 <= n && b[i] == 0xFF) {
      unsigned marker = b[i + 1], len = read16(b + i + 2, 1);
      if (marker == 0xDA || marker == 0xD9 || len < 2) break; /* start of scan: no more metadata */
      if (marker == 0xE1 && len >= 8 && i + 2 + len <= n && memcmp(b + i + 4, "Exif\0\0", 6) == 0)
        return tiff_orientation(b + i + 10, len - 8);
      i += 2 + len;
    }
  } else if (n > 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) {
    size_t i = 8;
    while (i + 12 <= n) {
      unsigned long len = read32(b + i, 1);
      if (len > n - i - 12) break;
      if (memcmp(b + i + 4, "eXIf", 4) == 0) return tiff_orientation(b + i + 8, len);
      if (memcmp(b + i + 4, "IEND", 4) == 0) break;
      i += 12 + len;
    }
  }
  return 1;
}

/* Where output pixel (x, y) comes from in a w x h source, for EXIF orientation o (the transposes Pillow applies). */
static void oriented_source(int o, int x, int y, int w, int h, int *sx, int *sy) {
  switch (o) {
    case 2: *sx = w - 1 - x, *sy = y; break;         /* mirrored */
    case 3: *sx = w - 1 - x, *sy = h - 1 - y; break; /* rotated 180 */
    case 4: *sx = x, *sy = h - 1 - y; break;         /* flipped */
    case 5: *sx = y, *sy = x; break;                 /* transposed */
    case 6: *sx = y, *sy = h - 1 - x; break;         /* rotated 90 clockwise to show */
    case 7: *sx = w - 1 - y, *sy = h - 1 - x; break; /* transversed */
    case 8: *sx = w - 1 - y, *sy = x; break;         /* rotated 90 counter-clockwise to show */
    default: *sx = x, *sy = y;
  }
}

static Photo read_photo(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "litert_run: cannot open image %s: %s\n", path, strerror(errno));
    exit(2);
  }
  size_t cap = 1 << 20, n = 0, got;
  unsigned char *bytes = malloc(cap);
  while (bytes && (got = fread(bytes + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) bytes = realloc(bytes, cap *= 2);
  }
  fclose(f);
  if (!bytes) fail(3, "out of memory", 0);
  if (n > INT32_MAX) fail(2, "an image file over 2 GB", 0);
  Photo p = {0, 0, file_orientation(bytes, n), NULL};
  int w, h, ch;
  if (!stbi_info_from_memory(bytes, (int)n, &w, &h, &ch)) {
    fprintf(stderr, "litert_run: %s: not a readable PNG or JPEG (%s)\n", path, stbi_failure_reason());
    exit(2);
  }
  /* A 16-bit grayscale PNG is scaled by 65535 (Pillow's I;16); other images are read as 8 bits, as Pillow's RGB. */
  int wide = ch == 1 && stbi_is_16_bit_from_memory(bytes, (int)n);
  void *pix = wide ? (void *)stbi_load_16_from_memory(bytes, (int)n, &w, &h, &ch, 3)
                   : (void *)stbi_load_from_memory(bytes, (int)n, &w, &h, &ch, 3);
  free(bytes);
  if (!pix) {
    fprintf(stderr, "litert_run: %s: cannot decode (%s)\n", path, stbi_failure_reason());
    exit(2);
  }
  int turned = p.orientation >= 5;
  p.width = turned ? h : w, p.height = turned ? w : h;
  p.rgb = malloc((size_t)w * h * 3 * sizeof(float));
  if (!p.rgb) fail(3, "out of memory", 0);
  for (int y = 0; y < p.height; y++)
    for (int x = 0; x < p.width; x++) {
      int sx, sy;
      oriented_source(p.orientation, x, y, w, h, &sx, &sy);
      size_t s = ((size_t)sy * w + sx) * 3, d = ((size_t)y * p.width + x) * 3;
      for (int c = 0; c < 3; c++)
        p.rgb[d + c] = wide ? (float)((const uint16_t *)pix)[s + c] / 65535.0f : (float)((const unsigned char *)pix)[s + c] / 255.0f;
    }
  stbi_image_free(pix);
  return p;
}

/* Weights of torch's bilinear resize with antialias=True, align_corners=False along one axis (runtime/route.py
 * _aa_weights): a triangle widened by the scale when shrinking, cut at the borders, normalised. first[i] and
 * taps[i] say which inputs output i reads; weights are in rows of `width` (the widest tap count). */
typedef struct {
  int *first, *taps, width;
  float *w;
} Weights;

static Weights resize_weights(int n_in, int n_out) {
  double scale = (double)n_in / n_out, support = scale > 1 ? scale : 1;
  Weights r = {malloc(sizeof(int) * n_out), malloc(sizeof(int) * n_out), (int)ceil(2 * support) + 2, NULL};
  r.w = calloc((size_t)n_out * r.width, sizeof(float));
  if (!r.first || !r.taps || !r.w) fail(3, "out of memory", 0);
  for (int i = 0; i < n_out; i++) {
    double center = scale * (i + 0.5), f[r.width], total = 0;
    int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
    lo = lo < 0 ? 0 : lo, hi = hi > n_in ? n_in : hi;
    if (hi - lo > r.width) fail(3, "resize weights wider than planned", 0);
    for (int j = lo; j < hi; j++) {
      double v = 1 - fabs((j - center + 0.5) / support);
      total += f[j - lo] = v > 0 ? v : 0;
    }
    r.first[i] = lo, r.taps[i] = hi - lo;
    for (int j = 0; j < hi - lo; j++) r.w[(size_t)i * r.width + j] = total > 0 ? (float)(f[j] / total) : 0.0f;
  }
  return r;
}

/* (h, w, 3) -> (oh, ow, 3): along x, then along y, each sum in double (as the bundle's Kotlin does). */
static float *resize_aa(const float *img, int h, int w, int oh, int ow) {
  float *out = malloc((size_t)oh * ow * 3 * sizeof(float));
  if (!out) fail(3, "out of memory", 0);
  if (h == oh && w == ow) return memcpy(out, img, (size_t)oh * ow * 3 * sizeof(float));
  Weights wx = resize_weights(w, ow), wy = resize_weights(h, oh);
  float *tmp = malloc((size_t)h * ow * 3 * sizeof(float));
  if (!tmp) fail(3, "out of memory", 0);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < ow; x++)
      for (int c = 0; c < 3; c++) {
        double s = 0;
        for (int k = 0; k < wx.taps[x]; k++) s += (double)wx.w[(size_t)x * wx.width + k] * img[((size_t)y * w + wx.first[x] + k) * 3 + c];
        tmp[((size_t)y * ow + x) * 3 + c] = (float)s;
      }
  for (int y = 0; y < oh; y++)
    for (int x = 0; x < ow; x++)
      for (int c = 0; c < 3; c++) {
        double s = 0;
        for (int k = 0; k < wy.taps[y]; k++) s += (double)wy.w[(size_t)y * wy.width + k] * tmp[((size_t)(wy.first[y] + k) * ow + x) * 3 + c];
        out[((size_t)y * ow + x) * 3 + c] = (float)s;
      }
  free(tmp), free(wx.first), free(wx.taps), free(wx.w), free(wy.first), free(wy.taps), free(wy.w);
  return out;
}

/* The photo at `path` into input t, which must be image (1, H, W, 3); the input is also written to OUT_DIR/image.f32. */
static void photo_input(const char *path, Tensor *t, const char *out_dir, Photo *seen) {
  if (t->rank != 4 || t->dims[0] != 1 || t->dims[3] != 3 || t->dims[1] < 1 || t->dims[2] < 1) {
    fprintf(stderr, "litert_run: --image needs a model whose one input is an image (1, H, W, 3); '%s' is not\n", t->name);
    exit(2);
  }
  *seen = read_photo(path);
  float *x = resize_aa(seen->rgb, seen->height, seen->width, t->dims[1], t->dims[2]);
  free(seen->rgb);
  seen->rgb = NULL;
  store_input(t, x);
  Tensor as_float = *t; /* what the model was given, as float32 (an int8-full input is written before quantizing) */
  as_float.element_type = kElementFloat32, as_float.data = x;
  write_output(out_dir, &as_float);
  free(x);
}

/* Element i of an output as float32 (an integer output dequantized with the file's scale and zero point). */
static float value(const Tensor *t, size_t i) {
  if (t->element_type == kElementFloat32) return ((const float *)t->data)[i];
  if (t->element_type == kElementInt8) return ((float)((const int8_t *)t->data)[i] - (float)t->q.zero_point) * t->q.scale;
  return ((float)((const uint8_t *)t->data)[i] - (float)t->q.zero_point) * t->q.scale;
}

/* An extractor's decisions in the JSON line: the mask logit, and the message read (bit i is 1 where its logit is
 * positive; hex with bit 0 as the first byte's high bit, as the bundle's model.json message_format says). */
static void print_decisions(const Tensor *out, size_t nout) {
  for (size_t k = 0; k < nout; k++) {
    const Tensor *t = &out[k];
    if (strcmp(t->name, "mask_logit") == 0 && elements(t) == 1) printf(", \"mask_logit\": %.6g", value(t, 0));
    if (strcmp(t->name, "bit_logits") == 0) {
      size_t n = elements(t);
      printf(", \"bits\": %zu, \"message\": \"", n);
      for (size_t b = 0; b < n; b += 8) {
        unsigned byte = 0;
        for (size_t j = 0; j < 8; j++) byte |= (b + j < n && value(t, b + j) > 0) ? 0x80u >> j : 0;
        printf("%02x", byte);
      }
      printf("\"");
    }
  }
}

static void write_output(const char *dir, const Tensor *t) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof path, "%s/%s.f32", dir, t->name);
  snprintf(tmp, sizeof tmp, "%s.partial", path);
  size_t n = elements(t);
  float *y = malloc(n * sizeof(float));
  if (!y) fail(3, "out of memory", 0);
  for (size_t i = 0; i < n; i++) y[i] = value(t, i);
  FILE *f = fopen(tmp, "wb");
  if (!f || fwrite(y, sizeof(float), n, f) != n || fclose(f) != 0 || rename(tmp, path) != 0) {
    fprintf(stderr, "litert_run: cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  free(y);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  int info = argc == 3 && strcmp(argv[2], "--info") == 0;
  int photo_mode = argc >= 3 && strcmp(argv[2], "--image") == 0;
  int shift = photo_mode; /* with --image, PHOTO takes IN_DIR's place one argument later */
  if (!info && argc != 4 + shift && argc != 5 + shift) {
    fprintf(stderr,
            "usage: litert_run MODEL.tflite --info | litert_run MODEL.tflite IN_DIR OUT_DIR [RUNS]"
            " | litert_run MODEL.tflite --image PHOTO.(png|jpg) OUT_DIR [RUNS]\n");
    return 2;
  }
  const char *in_arg = info ? NULL : argv[2 + shift], *out_dir = info ? NULL : argv[3 + shift];
  int runs = argc == 5 + shift ? atoi(argv[4 + shift]) : 1;
  if (runs < 1 || runs > 10000) fail(2, "RUNS must be between 1 and 10000", 0);
  FILE *probe = fopen(argv[1], "rb");
  if (!probe) {
    fprintf(stderr, "litert_run: cannot open %s: %s\n", argv[1], strerror(errno));
    return 2;
  }
  fclose(probe);

  LiteRtEnvironment env;
  LiteRtModel model;
  CHECK(LiteRtCreateEnvironment(0, NULL, &env), "creating the LiteRT environment");
  CHECK(LiteRtCreateModelFromFile(env, argv[1], &model), "reading the model (not a LiteRT flatbuffer?)");
  LiteRtParamIndex nsig = 0, sig_index = 0, nin = 0, nout = 0;
  CHECK(LiteRtGetNumModelSignatures(model, &nsig), "counting signatures");
  if (nsig == 0) fail(3, "the model has no signature (inputs and outputs are found by signature name)", 0);
  LiteRtSignature sig = NULL;
  const char *key = NULL;
  for (LiteRtParamIndex i = 0; i < nsig; i++) { /* serving_default when there, else the first */
    LiteRtSignature s;
    const char *k;
    CHECK(LiteRtGetModelSignature(model, i, &s), "reading a signature");
    CHECK(LiteRtGetSignatureKey(s, &k), "reading a signature key");
    if (!sig || strcmp(k, "serving_default") == 0) {
      sig = s, key = k, sig_index = i;
    }
  }
  CHECK(LiteRtGetNumSignatureInputs(sig, &nin), "counting inputs");
  CHECK(LiteRtGetNumSignatureOutputs(sig, &nout), "counting outputs");
  if (nin > MAX_TENSORS || nout > MAX_TENSORS) fail(3, "too many inputs or outputs", 0);
  static Tensor in[MAX_TENSORS], out[MAX_TENSORS];
  for (LiteRtParamIndex i = 0; i < nin; i++) {
    const char *name;
    LiteRtTensor t;
    CHECK(LiteRtGetSignatureInputName(sig, i, &name), "reading an input name");
    CHECK(LiteRtGetSignatureInputTensorByIndex(sig, i, &t), "reading an input tensor");
    describe(t, name, &in[i]);
  }
  for (LiteRtParamIndex i = 0; i < nout; i++) {
    const char *name;
    LiteRtTensor t;
    CHECK(LiteRtGetSignatureOutputName(sig, i, &name), "reading an output name");
    CHECK(LiteRtGetSignatureOutputTensorByIndex(sig, i, &t), "reading an output tensor");
    describe(t, name, &out[i]);
  }
  printf("{\"runtime\": \"LiteRT C API (libLiteRt.so), CPU\", \"signature\": \"%s\", \"inputs\": [", key);
  for (LiteRtParamIndex i = 0; i < nin; i++) printf("%s", i ? ", " : ""), print_tensor(&in[i]);
  printf("], \"outputs\": [");
  for (LiteRtParamIndex i = 0; i < nout; i++) printf("%s", i ? ", " : ""), print_tensor(&out[i]);
  printf("]");
  if (info) {
    printf("}\n");
    LiteRtDestroyModel(model);
    LiteRtDestroyEnvironment(env);
    return 0;
  }
  for (LiteRtParamIndex i = 0; i < nin + nout; i++) {
    Tensor *t = i < nin ? &in[i] : &out[i - nin];
    if (!element_size(t->element_type)) {
      fprintf(stderr, "litert_run: tensor '%s' has element type %d; this runner handles float32, int8 and uint8\n", t->name,
              t->element_type);
      return 3;
    }
  }

  LiteRtOptions options;
  LiteRtCompiledModel compiled;
  Photo photo = {0, 0, 1, NULL};
  CHECK(LiteRtCreateOptions(&options), "creating compilation options");
  CHECK(LiteRtSetOptionsHardwareAccelerators(options, kHwAcceleratorCpu), "choosing the CPU accelerator");
  CHECK(LiteRtCreateCompiledModel(env, model, options, &compiled), "compiling the model for the CPU");
  for (LiteRtParamIndex i = 0; i < nin + nout; i++) {
    int is_in = i < nin;
    Tensor *t = is_in ? &in[i] : &out[i - nin];
    LiteRtParamIndex j = is_in ? i : i - nin;
    LiteRtTensorBufferRequirements req;
    if (is_in)
      CHECK(LiteRtGetCompiledModelInputBufferRequirements(compiled, sig_index, j, &req), "input buffer requirements");
    else
      CHECK(LiteRtGetCompiledModelOutputBufferRequirements(compiled, sig_index, j, &req), "output buffer requirements");
    CHECK(LiteRtCreateManagedTensorBufferFromRequirements(env, t->type, req, &t->buffer), "creating a tensor buffer");
    CHECK(LiteRtGetTensorBufferPackedSize(t->buffer, &t->bytes), "reading a buffer's size");
    if (t->bytes != elements(t) * element_size(t->element_type)) fail(3, "a buffer whose size is not its tensor's", 0);
    t->data = calloc(1, t->bytes);
    if (!t->data) fail(3, "out of memory", 0);
    if (is_in) {
      void *addr;
      if (photo_mode && nin != 1) fail(2, "--image runs a model with one input (the extractor); this one takes more", 0);
      if (photo_mode)
        photo_input(in_arg, t, out_dir, &photo);
      else
        read_input(in_arg, t);
      CHECK(LiteRtLockTensorBuffer(t->buffer, &addr, kLockWrite), "locking an input buffer");
      memcpy(addr, t->data, t->bytes);
      CHECK(LiteRtUnlockTensorBuffer(t->buffer), "unlocking an input buffer");
    }
  }
  LiteRtTensorBuffer inb[MAX_TENSORS], outb[MAX_TENSORS];
  for (LiteRtParamIndex i = 0; i < nin; i++) inb[i] = in[i].buffer;
  for (LiteRtParamIndex i = 0; i < nout; i++) outb[i] = out[i].buffer;
  printf(", \"run_ms\": [");
  for (int r = 0; r < runs; r++) {
    double t0 = now_ms();
    CHECK(LiteRtRunCompiledModel(compiled, sig_index, nin, inb, nout, outb), "running the model");
    printf("%s%.3f", r ? ", " : "", now_ms() - t0);
  }
  printf("]");
  for (LiteRtParamIndex i = 0; i < nout; i++) {
    void *addr;
    CHECK(LiteRtLockTensorBuffer(out[i].buffer, &addr, kLockRead), "locking an output buffer");
    memcpy(out[i].data, addr, out[i].bytes);
    CHECK(LiteRtUnlockTensorBuffer(out[i].buffer), "unlocking an output buffer");
    write_output(out_dir, &out[i]);
  }
  if (photo_mode) {
    printf(", \"image\": {\"file\": \"");
    for (const char *c = in_arg; *c; c++) printf(*c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
    printf("\", \"width\": %d, \"height\": %d, \"exif_orientation\": %d}", photo.width, photo.height, photo.orientation);
  }
  print_decisions(out, nout);
  printf("}\n");
  for (LiteRtParamIndex i = 0; i < nin + nout; i++) {
    Tensor *t = i < nin ? &in[i] : &out[i - nin];
    LiteRtDestroyTensorBuffer(t->buffer);
    free(t->data);
  }
  LiteRtDestroyCompiledModel(compiled);
  LiteRtDestroyOptions(options);
  LiteRtDestroyModel(model);
  LiteRtDestroyEnvironment(env);
  return 0;
}
