/* litert_run: run a .tflite file through the LiteRT C API (libLiteRt.so), as an Android or Linux app does.
 *
 *   litert_run MODEL.tflite --info                      one JSON line: the signature's inputs and outputs
 *   litert_run MODEL.tflite IN_DIR OUT_DIR [RUNS]       IN_DIR/<input>.f32 -> OUT_DIR/<output>.f32, JSON line
 *
 * Tensors travel as raw little-endian float32 files named by the signature's names (image.f32,
 * message.f32 -> mask_logit.f32, bit_logits.f32, ...); an integer input or output (an int8-full file)
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
  size_t got = fread(x, sizeof(float), n, f);
  int extra = fgetc(f) != EOF;
  fclose(f);
  if (got != n || extra) {
    fprintf(stderr, "litert_run: %s holds %s%zu float32 values; input '%s' takes %zu\n", path, extra ? "more than " : "", got,
            t->name, n);
    exit(2);
  }
  if (t->element_type == kElementFloat32) {
    memcpy(t->data, x, n * sizeof(float));
  } else { /* the file's own scale and zero point, rounded and clamped to the integer range */
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
  free(x);
}

static void write_output(const char *dir, const Tensor *t) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof path, "%s/%s.f32", dir, t->name);
  snprintf(tmp, sizeof tmp, "%s.partial", path);
  size_t n = elements(t);
  float *y = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    if (t->element_type == kElementFloat32)
      y[i] = ((const float *)t->data)[i];
    else if (t->element_type == kElementInt8)
      y[i] = ((float)((const int8_t *)t->data)[i] - (float)t->q.zero_point) * t->q.scale;
    else
      y[i] = ((float)((const uint8_t *)t->data)[i] - (float)t->q.zero_point) * t->q.scale;
  }
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
  if (!info && argc != 4 && argc != 5) {
    fprintf(stderr, "usage: litert_run MODEL.tflite --info | litert_run MODEL.tflite IN_DIR OUT_DIR [RUNS]\n");
    return 2;
  }
  int runs = argc == 5 ? atoi(argv[4]) : 1;
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
  printf("{\"signature\": \"%s\", \"inputs\": [", key);
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
      read_input(argv[2], t);
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
  printf("]}\n");
  for (LiteRtParamIndex i = 0; i < nout; i++) {
    void *addr;
    CHECK(LiteRtLockTensorBuffer(out[i].buffer, &addr, kLockRead), "locking an output buffer");
    memcpy(out[i].data, addr, out[i].bytes);
    CHECK(LiteRtUnlockTensorBuffer(out[i].buffer), "unlocking an output buffer");
    write_output(argv[3], &out[i]);
  }
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
