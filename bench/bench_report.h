// What the in-process benchmarks (read_bench, cache_bench) share: the summary
// of repeated runs (median and noise) and the rows they print for bench/run.py
// with --json: a JSON list of {name, value, unit, noise, peer, ratio, note}.
//
// Header-only; plain values; not thread-safe (one report per program).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace hexz::bench {

// Median of the samples and noise = (max - min) / median.
struct Summary {
  double median = 0;
  double noise = 0;
};

inline Summary Summarize(std::vector<double> samples) {
  Summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  size_t n = samples.size();
  s.median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  s.noise = s.median > 0 ? (samples.back() - samples.front()) / s.median : 0;
  return s;
}

struct Row {
  std::string name;
  double value = 0;
  std::string unit;
  double noise = NAN;  // NAN: not measured (printed as null)
  std::string peer;    // empty: no peer (peer and ratio printed as null)
  double ratio = NAN;  // value / the peer's value (above 1: hexz is faster)
  std::string note;
};

inline std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

inline std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

inline void PrintJson(const std::vector<Row>& rows) {
  std::printf("[\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    std::printf(
        "  {\"name\": %s, \"value\": %s, \"unit\": %s, \"noise\": %s, \"peer\": %s, "
        "\"ratio\": %s, \"note\": %s}%s\n",
        JsonString(r.name).c_str(), JsonNumber(r.value).c_str(), JsonString(r.unit).c_str(),
        JsonNumber(r.noise).c_str(), r.peer.empty() ? "null" : JsonString(r.peer).c_str(),
        r.peer.empty() ? "null" : JsonNumber(r.ratio).c_str(), JsonString(r.note).c_str(),
        i + 1 < rows.size() ? "," : "");
  }
  std::printf("]\n");
}

}  // namespace hexz::bench
