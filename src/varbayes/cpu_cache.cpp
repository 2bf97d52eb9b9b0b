// A caching CPU allocator for torch, installed around the compiled SVI loop
// (varbayes/cpu_cache.py builds and loads this file; see its docstring for why).
//
// Blocks of up to 1 MiB are rounded up to a power of two (64 B at least) and, when freed
// while the cache is active, kept on a free list of their size class instead of going
// back to the C library; larger blocks go straight to posix_memalign and free. Every
// block is 64-byte aligned, as c10's default CPU allocator's are, and carries its size
// class in a 64-byte header before the data, so the deleter needs no lookup. At most
// 64 MiB are kept; uninstalling (the last of nested installs) empties the lists.
// Only c10's public API is used: Allocator, GetCPUAllocator and SetCPUAllocator.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace {

constexpr size_t kAlign = 64;
constexpr int kMinShift = 6;   // 64 B
constexpr int kMaxShift = 20;  // 1 MiB
constexpr size_t kMaxCachedBytes = size_t(64) << 20;

struct Cache {
  std::mutex mu;
  std::vector<void*> blocks[kMaxShift + 1];
  size_t cached = 0;
  int installs = 0;
  c10::Allocator* previous = nullptr;
};

// Never destroyed: blocks may be freed at any time, up to the process's exit.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

void release_all(Cache& c) {  // with c.mu held
  for (auto& list : c.blocks) {
    for (void* base : list) std::free(base);
    list.clear();
  }
  c.cached = 0;
}

void deleter(void* data) {
  char* base = static_cast<char*>(data) - kAlign;
  int shift = *reinterpret_cast<int*>(base);
  if (shift > 0) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    size_t bytes = size_t(1) << shift;
    if (c.installs > 0 && c.cached + bytes <= kMaxCachedBytes) {
      c.blocks[shift].push_back(base);
      c.cached += bytes;
      return;
    }
  }
  std::free(base);
}

struct CachingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    int shift = 0;
    size_t bytes = n;
    if (n <= (size_t(1) << kMaxShift)) {
      shift = kMinShift;
      while ((size_t(1) << shift) < n) ++shift;
      bytes = size_t(1) << shift;
    }
    void* base = nullptr;
    if (shift > 0) {
      Cache& c = cache();
      std::lock_guard<std::mutex> lock(c.mu);
      auto& list = c.blocks[shift];
      if (!list.empty()) {
        base = list.back();
        list.pop_back();
        c.cached -= bytes;
      }
    }
    if (base == nullptr) {
      int err = posix_memalign(&base, kAlign, bytes + kAlign);
      TORCH_CHECK(err == 0 && base != nullptr, "varbayes cpu_cache: cannot allocate ",
                  bytes, " bytes");
    }
    *static_cast<int*>(base) = shift;
    void* data = static_cast<char*>(base) + kAlign;
    return {data, data, &deleter, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &deleter; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CachingAllocator* allocator() {
  static CachingAllocator* a = new CachingAllocator;
  return a;
}

}  // namespace

extern "C" {

// Make the caching allocator torch's CPU allocator (nested calls count); 1 on success,
// 0 when another allocator of higher priority holds the place (nothing changed).
int varbayes_cpu_cache_install() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.installs == 0) {
    c10::Allocator* current = c10::GetCPUAllocator();
    c10::SetCPUAllocator(allocator(), 0);
    if (c10::GetCPUAllocator() != allocator()) return 0;
    c.previous = current;
  }
  ++c.installs;
  return 1;
}

// Undo one install; the last one puts the previous allocator back and frees the lists.
// Blocks still in use are freed to the C library when their tensors go.
void varbayes_cpu_cache_uninstall() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.installs == 0) return;
  if (--c.installs == 0) {
    if (c10::GetCPUAllocator() == allocator()) c10::SetCPUAllocator(c.previous, 0);
    release_all(c);
  }
}

// Bytes held on the free lists now (for tests).
size_t varbayes_cpu_cache_cached_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.cached;
}

}  // extern "C"
