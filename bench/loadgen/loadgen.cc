// A closed-loop gRPC load generator for the Open Inference Protocol, standing in
// for perf_analyzer where its wheels cannot run (they need glibc 2.38).
//
// It sends one ModelInferRequest, serialized once by the caller and read from a
// file, through grpc::GenericStub (no generated code, nothing serialized per
// call), from `concurrency` slots that each keep exactly one request in flight:
// unary ModelInfer calls, or one ModelStreamInfer stream per slot with one
// request outstanding on it (as perf_analyzer --streaming). With --payload given
// several times (requests that differ, e.g. texts of different lengths), each slot
// sends them in turn, slot i starting at the i-th. The slots are spread
// over `channels` channels, each with a distinct channel argument so that each
// is its own TCP connection (a server sharing its port with SO_REUSEPORT gets
// them spread over its processes), and over `threads` completion-queue threads.
//
// After `warmup` seconds it measures for `duration` seconds: requests completed
// in the window, their latencies (p50/p90/p99), non-OK statuses and in-stream
// error_messages, its own CPU time (getrusage, every thread) and optionally the
// CPU time of other processes (--watch-pids, read from /proc at the window's
// edges), and the whole machine's busy and stolen CPU time over the window (/proc/stat), so
// that CPU taken by anything else is visible. Prints one JSON object on stdout.
//
// Build: g++ -O2 -Wall -std=c++17 loadgen.cc $(pkg-config --cflags --libs grpc++)

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

const char kUnaryMethod[] = "/inference.GRPCInferenceService/ModelInfer";
const char kStreamMethod[] = "/inference.GRPCInferenceService/ModelStreamInfer";

struct Options {
  std::string target = "127.0.0.1:8001";
  std::vector<std::string> payload_files;  // --payload, once or more
  bool streaming = false;
  int concurrency = 1;
  int channels = 0;  // 0: one per slot
  int threads = 1;
  double warmup = 1.0;
  double duration = 5.0;
  std::vector<int> watch_pids;
  int max_message = 64 << 20;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "loadgen: %s\n"
               "usage: loadgen --target HOST:PORT --payload FILE [--payload FILE...] [--streaming]\n"
               "               [--concurrency N] [--channels M] [--threads T] [--warmup S] [--duration S]\n"
               "               [--watch-pids PID,PID,...]\n",
               why);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--target") {
      o.target = value();
    } else if (a == "--payload") {
      o.payload_files.push_back(value());
    } else if (a == "--streaming") {
      o.streaming = true;
    } else if (a == "--concurrency") {
      o.concurrency = std::atoi(value().c_str());
    } else if (a == "--channels") {
      o.channels = std::atoi(value().c_str());
    } else if (a == "--threads") {
      o.threads = std::atoi(value().c_str());
    } else if (a == "--warmup") {
      o.warmup = std::atof(value().c_str());
    } else if (a == "--duration") {
      o.duration = std::atof(value().c_str());
    } else if (a == "--watch-pids") {
      std::stringstream ss(value());
      std::string item;
      while (std::getline(ss, item, ',')) {
        if (!item.empty()) o.watch_pids.push_back(std::atoi(item.c_str()));
      }
    } else {
      Usage(("unknown argument " + a).c_str());
    }
  }
  if (o.payload_files.empty()) Usage("--payload is required");
  if (o.concurrency < 1 || o.threads < 1 || o.duration <= 0 || o.warmup < 0) Usage("bad numbers");
  if (o.channels <= 0 || o.channels > o.concurrency) o.channels = o.concurrency;
  if (o.threads > o.concurrency) o.threads = o.concurrency;
  return o;
}

// CPU seconds (user + system) of a process, from /proc/PID/stat; -1 when gone.
double ProcessCpu(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  long long utime = 0, stime = 0;
  // Fields after the command: state is field 3; utime and stime are 14 and 15.
  for (int k = 3; k <= 15 && rest >> field; ++k) {
    if (k == 14) utime = std::atoll(field.c_str());
    if (k == 15) stime = std::atoll(field.c_str());
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

double WatchedCpu(const std::vector<int>& pids) {
  double total = 0;
  for (int pid : pids) {
    double c = ProcessCpu(pid);
    if (c > 0) total += c;
  }
  return total;
}

// CPU seconds the whole machine spent busy (all CPUs: user, nice, system, irq, softirq, steal) and
// stolen by the hypervisor, from the first line of /proc/stat.
std::pair<double, double> MachineCpu() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  f >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  double tick = double(sysconf(_SC_CLK_TCK));
  return {double(user + nice + system + irq + softirq + steal) / tick, double(steal) / tick};
}

double SelfCpu() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Reads a protobuf varint; false when the buffer ends first.
bool Varint(const uint8_t*& p, const uint8_t* end, uint64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    uint8_t b = *p++;
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

// The error_message (field 1) of a serialized ModelStreamInferResponse; empty when none.
std::string StreamError(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return "unreadable response";
  std::string joined;
  const uint8_t* p;
  const uint8_t* end;
  if (slices.size() == 1) {
    p = slices[0].begin();
    end = slices[0].end();
  } else {
    for (auto& s : slices) joined.append(reinterpret_cast<const char*>(s.begin()), s.size());
    p = reinterpret_cast<const uint8_t*>(joined.data());
    end = p + joined.size();
  }
  while (p < end) {
    uint64_t tag, len;
    if (!Varint(p, end, &tag)) return "malformed response";
    switch (tag & 7) {
      case 0:
        if (!Varint(p, end, &len)) return "malformed response";
        break;
      case 1:
        p += 8;
        break;
      case 5:
        p += 4;
        break;
      case 2:
        if (!Varint(p, end, &len) || len > uint64_t(end - p)) return "malformed response";
        if ((tag >> 3) == 1 && len > 0) return std::string(reinterpret_cast<const char*>(p), len);
        p += len;
        break;
      default:
        return "malformed response";
    }
  }
  return "";
}

struct Shared {
  Options opt;
  std::vector<grpc::ByteBuffer> requests;  // one per --payload, in order
  Clock::time_point window_start, window_end;
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::vector<std::string> error_samples;

  void Sample(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu);
    if (error_samples.size() < 5) error_samples.push_back(what);
  }
};

struct Worker;

enum class Op { kFinish, kStart, kWrite, kRead, kWritesDone, kStreamFinish };

struct Slot;

struct Tag {
  Slot* slot;
  Op op;
};

struct Slot {
  Worker* worker = nullptr;
  grpc::GenericStub* stub = nullptr;
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> unary;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream;
  grpc::ByteBuffer response;
  grpc::Status status;
  Clock::time_point t0;
  size_t next = 0;  // the request this slot sends next
  bool write_done = false, read_done = false, read_ok = false;
  bool active = false;
  Tag finish{this, Op::kFinish}, start{this, Op::kStart}, write{this, Op::kWrite}, read{this, Op::kRead},
      writes_done{this, Op::kWritesDone}, stream_finish{this, Op::kStreamFinish};
};

struct Worker {
  Shared* shared = nullptr;
  grpc::CompletionQueue cq;
  std::vector<Slot*> slots;
  std::vector<double> latencies_ms;  // completions inside the window
  long long errors = 0;
  long long outstanding = 0;

  bool InWindow(Clock::time_point t) const { return t >= shared->window_start && t < shared->window_end; }

  void Record(Clock::time_point t0, Clock::time_point t1) {
    if (InWindow(t1)) latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }

  void Error(Clock::time_point t1, const std::string& what) {
    if (InWindow(t1)) {
      ++errors;
      shared->Sample(what);
    }
  }

  const grpc::ByteBuffer& NextRequest(Slot* s) {
    const grpc::ByteBuffer& request = shared->requests[s->next];
    s->next = (s->next + 1) % shared->requests.size();
    return request;
  }

  void StartUnary(Slot* s) {
    s->ctx = std::make_unique<grpc::ClientContext>();
    s->t0 = Clock::now();
    s->unary = s->stub->PrepareUnaryCall(s->ctx.get(), kUnaryMethod, NextRequest(s), &cq);
    s->unary->StartCall();
    s->unary->Finish(&s->response, &s->status, &s->finish);
    ++outstanding;
  }

  void OpenStream(Slot* s) {
    s->ctx = std::make_unique<grpc::ClientContext>();
    s->stream = s->stub->PrepareCall(s->ctx.get(), kStreamMethod, &cq);
    s->active = true;
    s->stream->StartCall(&s->start);
    ++outstanding;
  }

  void SendOnStream(Slot* s) {
    s->write_done = s->read_done = false;
    s->t0 = Clock::now();
    s->stream->Write(NextRequest(s), &s->write);
    s->stream->Read(&s->response, &s->read);
    outstanding += 2;
  }

  void CloseStream(Slot* s) {
    s->stream->WritesDone(&s->writes_done);
    ++outstanding;
  }

  void Handle(Tag* tag, bool ok) {
    Slot* s = tag->slot;
    --outstanding;
    const bool stop = shared->stopping.load(std::memory_order_relaxed);
    switch (tag->op) {
      case Op::kFinish: {
        auto t1 = Clock::now();
        if (s->status.ok()) {
          Record(s->t0, t1);
        } else {
          Error(t1, "status " + std::to_string(int(s->status.error_code())) + ": " + s->status.error_message());
        }
        s->response.Clear();
        if (!stop) StartUnary(s);
        break;
      }
      case Op::kStart:
        if (!ok) {  // the stream could not start: collect its status
          s->stream->Finish(&s->status, &s->stream_finish);
          ++outstanding;
        } else if (stop) {
          CloseStream(s);
        } else {
          SendOnStream(s);
        }
        break;
      case Op::kWrite:
      case Op::kRead: {
        if (tag->op == Op::kWrite) {
          s->write_done = true;
          if (!ok) s->read_ok = false;
        } else {
          s->read_done = true;
          s->read_ok = ok;
          if (ok) {
            auto t1 = Clock::now();
            std::string message = StreamError(s->response);
            if (message.empty()) {
              Record(s->t0, t1);
            } else {
              Error(t1, "error_message: " + message);
            }
          }
        }
        if (!(s->write_done && s->read_done)) break;
        if (!s->read_ok) {  // the stream broke: its status says why
          s->stream->Finish(&s->status, &s->stream_finish);
          ++outstanding;
        } else if (stop) {
          CloseStream(s);
        } else {
          SendOnStream(s);
        }
        break;
      }
      case Op::kWritesDone:
        s->stream->Finish(&s->status, &s->stream_finish);
        ++outstanding;
        break;
      case Op::kStreamFinish: {
        auto t1 = Clock::now();
        s->active = false;
        if (!s->status.ok()) {
          Error(t1, "stream status " + std::to_string(int(s->status.error_code())) + ": " +
                        s->status.error_message());
        }
        if (!stop) OpenStream(s);  // a broken stream is replaced
        break;
      }
    }
  }

  void Run() {
    for (Slot* s : slots) {
      if (shared->opt.streaming) {
        OpenStream(s);
      } else {
        StartUnary(s);
      }
    }
    void* raw;
    bool ok;
    while (outstanding > 0 && cq.Next(&raw, &ok)) Handle(static_cast<Tag*>(raw), ok);
    cq.Shutdown();
    while (cq.Next(&raw, &ok)) {
    }
  }
};

double Percentile(const std::vector<double>& sorted, double q) {
  // Linear interpolation between closest ranks (numpy's default).
  if (sorted.empty()) return NAN;
  double pos = q / 100.0 * double(sorted.size() - 1);
  size_t lo = size_t(std::floor(pos));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - double(lo));
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream s;
  s.precision(6);
  s << std::fixed << v;
  return s.str();
}

std::string JsonString(const std::string& v) {
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  Shared shared;
  shared.opt = Parse(argc, argv);
  const Options& opt = shared.opt;

  for (const std::string& file : opt.payload_files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) Usage(("cannot read " + file).c_str());
    std::string payload((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    grpc::Slice slice(payload);
    shared.requests.emplace_back(&slice, 1);
  }

  // Distinct channel arguments: channels do not share a subchannel, so each is its own connection.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int i = 0; i < opt.channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("maas.loadgen.channel", i);
    args.SetMaxReceiveMessageSize(opt.max_message);
    args.SetMaxSendMessageSize(opt.max_message);
    auto channel = grpc::CreateCustomChannel(opt.target, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "loadgen: could not connect to %s\n", opt.target.c_str());
      return 1;
    }
    channels.push_back(channel);
    stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
  }

  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::unique_ptr<Slot>> slots;
  for (int t = 0; t < opt.threads; ++t) {
    workers.push_back(std::make_unique<Worker>());
    workers.back()->shared = &shared;
  }
  for (int i = 0; i < opt.concurrency; ++i) {
    slots.push_back(std::make_unique<Slot>());
    Slot* s = slots.back().get();
    s->stub = stubs[i % opt.channels].get();
    s->worker = workers[i % opt.threads].get();
    s->next = size_t(i) % shared.requests.size();
    s->worker->slots.push_back(s);
  }

  auto now = Clock::now();
  shared.window_start = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.warmup));
  shared.window_end =
      shared.window_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.duration));

  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->Run(); });

  std::this_thread::sleep_until(shared.window_start);
  double self0 = SelfCpu();
  double watched0 = WatchedCpu(opt.watch_pids);
  auto machine0 = MachineCpu();
  auto t_start = Clock::now();
  std::this_thread::sleep_until(shared.window_end);
  double self1 = SelfCpu();
  double watched1 = WatchedCpu(opt.watch_pids);
  auto machine1 = MachineCpu();
  auto t_end = Clock::now();
  shared.stopping.store(true);
  for (auto& t : threads) t.join();

  std::vector<double> latencies;
  long long errors = 0;
  for (auto& w : workers) {
    latencies.insert(latencies.end(), w->latencies_ms.begin(), w->latencies_ms.end());
    errors += w->errors;
  }
  std::sort(latencies.begin(), latencies.end());
  double seconds = std::chrono::duration<double>(t_end - t_start).count();
  double requests = double(latencies.size());
  double self_cpu = self1 - self0;
  double watched_cpu = opt.watch_pids.empty() ? NAN : watched1 - watched0;
  double mean = 0;
  for (double l : latencies) mean += l;
  mean = latencies.empty() ? NAN : mean / requests;

  std::ostringstream out;
  out << "{\"loadgen\": \"maas C++ loadgen (grpc++ " << grpc::Version() << ", GenericStub)\""
      << ", \"mode\": \"" << (opt.streaming ? "stream" : "unary") << "\""
      << ", \"concurrency\": " << opt.concurrency << ", \"channels\": " << opt.channels
      << ", \"threads\": " << opt.threads << ", \"payloads\": " << shared.requests.size()
      << ", \"requests\": " << latencies.size() << ", \"errors\": " << errors
      << ", \"seconds\": " << JsonNumber(seconds) << ", \"infer_per_s\": " << JsonNumber(requests / seconds)
      << ", \"mean_ms\": " << JsonNumber(mean) << ", \"p50_ms\": " << JsonNumber(Percentile(latencies, 50))
      << ", \"p90_ms\": " << JsonNumber(Percentile(latencies, 90))
      << ", \"p99_ms\": " << JsonNumber(Percentile(latencies, 99))
      << ", \"max_ms\": " << JsonNumber(latencies.empty() ? NAN : latencies.back())
      << ", \"loadgen_cpu_s\": " << JsonNumber(self_cpu)
      << ", \"loadgen_cpu_us_per_request\": " << JsonNumber(requests ? self_cpu / requests * 1e6 : NAN)
      << ", \"watched_cpu_s\": " << JsonNumber(watched_cpu)
      << ", \"machine_busy_cpu_s\": " << JsonNumber(machine1.first - machine0.first)
      << ", \"machine_steal_cpu_s\": " << JsonNumber(machine1.second - machine0.second)
      << ", \"cpus\": " << std::thread::hardware_concurrency() << ", \"error_samples\": [";
  for (size_t i = 0; i < shared.error_samples.size(); ++i) {
    out << (i ? ", " : "") << JsonString(shared.error_samples[i]);
  }
  out << "]}";
  std::cout << out.str() << std::endl;
  return 0;
}
