#include "http_connection.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>
#include <rbee/narration/sanitize.hpp>

namespace rbee::provisioner {
namespace {

using Clock = std::chrono::steady_clock;
// How long the transfer loop sleeps in curl_multi_poll at most: the progress callback (stall
// detection) runs at least this often. A stop wakes the poll at once.
constexpr int kPollMilliseconds = 100;
constexpr std::size_t kMaxErrorText = 300;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' ||
                           text.back() == '\n')) {
    text.remove_suffix(1);
  }
  return text;
}

void initialise_libcurl_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("libcurl could not be initialised");
    }
  });
}

struct HeaderList {
  curl_slist* list = nullptr;
  ~HeaderList() { curl_slist_free_all(list); }
  void add(const std::string& line) {
    curl_slist* grown = curl_slist_append(list, line.c_str());
    if (!grown) throw std::bad_alloc();
    list = grown;
  }
};

}  // namespace

std::string HttpResponseHead::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return "";
}

bool HttpResponseHead::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& entry) { return iequals(entry.first, name); });
}

// The libcurl handles, and the state of the request in flight that its callbacks fill in.
struct HttpConnection::Handles {
  CURL* easy = nullptr;
  CURLM* multi = nullptr;
  char error[CURL_ERROR_SIZE] = {};

  const HttpRequest* request = nullptr;
  const std::stop_token* stop = nullptr;
  HttpResponseHead head;
  bool head_delivered = false;
  bool aborted = false;
  bool stalled = false;
  bool cancelled = false;
  // What a caller's callback threw: carried past libcurl's C frames (an exception must never
  // unwind through them) and rethrown once the transfer is cleaned up.
  std::exception_ptr callback_error;
  std::uint64_t received = 0;  // header and body bytes of this request
  std::uint64_t window_received = 0;
  Clock::time_point window_start;

  ~Handles() {
    if (multi) curl_multi_cleanup(multi);
    if (easy) curl_easy_cleanup(easy);
  }

  void begin(const HttpRequest& r, const std::stop_token& s) {
    request = &r;
    stop = &s;
    head = {};
    head_delivered = aborted = stalled = cancelled = false;
    callback_error = nullptr;
    received = window_received = 0;
    window_start = Clock::now();
    error[0] = '\0';
  }

  // libcurl hands over one header line at a time, the status line first; an interim 1xx
  // answer comes with its own status line and blank line before the real one.
  static std::size_t on_header(char* data, std::size_t, std::size_t length, void* self) {
    auto& h = *static_cast<Handles*>(self);
    h.received += length;
    const std::string_view line(data, length);
    if (line.starts_with("HTTP/")) {
      h.head = {};
      const auto space = line.find(' ');
      if (space != std::string_view::npos) {
        h.head.status = std::atoi(std::string(line.substr(space + 1, 3)).c_str());
      }
      return length;
    }
    if (trimmed(line).empty()) {
      if (h.head.status >= 100 && h.head.status < 200) return length;  // interim: more follows
      h.head_delivered = true;
      return h.call([&] { return !h.request->on_head || h.request->on_head(h.head); }) ? length : 0;
    }
    if (const auto colon = line.find(':'); colon != std::string_view::npos) {
      h.head.headers.emplace_back(std::string(trimmed(line.substr(0, colon))),
                                  std::string(trimmed(line.substr(colon + 1))));
    }
    return length;
  }

  static std::size_t on_body(char* data, std::size_t, std::size_t length, void* self) {
    auto& h = *static_cast<Handles*>(self);
    h.received += length;
    return h.call([&] { return !h.request->on_body || h.request->on_body(data, length); }) ? length
                                                                                           : 0;
  }

  // Runs a caller's callback; false (and the transfer ends) when it declines or throws.
  template <typename Callback>
  bool call(Callback&& callback) {
    try {
      if (callback()) return true;
    } catch (...) {
      callback_error = std::current_exception();
    }
    aborted = true;
    return false;
  }

  // libcurl's progress callback, run at least every kPollMilliseconds and with every read:
  // stall detection and cancellation live here.
  static int on_progress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto& h = *static_cast<Handles*>(self);
    if (h.stop->stop_requested()) {
      h.cancelled = true;
      return 1;
    }
    const auto now = Clock::now();
    if (now - h.window_start >= h.request->stall_timeout) {
      if (h.received - h.window_received < h.request->stall_min_bytes) {
        h.stalled = true;
        return 1;
      }
      h.window_start = now;
      h.window_received = h.received;
    }
    return 0;
  }

  // The request on this connection's own multi handle, driven by the calling thread.
  CURLcode run_alone(const std::stop_token& stop_token) {
    curl_multi_add_handle(multi, easy);
    CURLcode code = CURLE_OK;
    {
      std::stop_callback wake_on_stop(stop_token, [this] { curl_multi_wakeup(multi); });
      for (;;) {
        int running = 0;
        if (curl_multi_perform(multi, &running) != CURLM_OK) {
          code = CURLE_FAILED_INIT;
          break;
        }
        if (running == 0) {
          int left = 0;
          while (CURLMsg* message = curl_multi_info_read(multi, &left)) {
            if (message->msg == CURLMSG_DONE) code = message->data.result;
          }
          break;
        }
        if (stop_token.stop_requested()) {
          cancelled = true;
          break;
        }
        curl_multi_poll(multi, nullptr, 0, kPollMilliseconds, nullptr);
      }
    }
    curl_multi_remove_handle(multi, easy);  // an unfinished transfer's connection is closed
    return code;
  }
};

// The multi handle of an HttpSession and who drives it (see the class comment).
struct HttpSession::Shared {
  CURLM* multi = nullptr;
  std::mutex mutex;  // guards what follows
  std::condition_variable changed;
  bool driving = false;
  std::vector<CURL*> to_add;                          // handed to the driver
  std::map<CURL*, std::optional<CURLcode>> requests;  // in flight; the result once done

  Shared() {
    initialise_libcurl_once();
    multi = curl_multi_init();
    if (!multi) throw std::bad_alloc();
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    // Idle connections kept for the next requests; libcurl's default follows the number of
    // requests added, which falls to nothing between two files.
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 32L);
  }
  ~Shared() { curl_multi_cleanup(multi); }

  // Runs `easy` to its end, driving every request meanwhile when no other thread does.
  CURLcode run(CURL* easy, const std::stop_token& stop) {
    std::unique_lock lock(mutex);
    requests[easy] = std::nullopt;
    to_add.push_back(easy);
    curl_multi_wakeup(multi);
    // The driver runs this request's progress callback, which sees the stop and ends it.
    std::stop_callback wake_on_stop(stop, [this] { curl_multi_wakeup(multi); });
    while (!requests[easy]) {
      if (driving) {
        changed.wait(lock);
        continue;
      }
      driving = true;
      drive_until(easy, lock);
      driving = false;
      changed.notify_all();  // a thread still waiting drives next
    }
    const CURLcode code = *requests[easy];
    requests.erase(easy);
    return code;
  }

  // Performs every request until `mine` is done. `lock` is held on entry and on return, and
  // released while libcurl runs, so other threads can hand over their requests.
  void drive_until(CURL* mine, std::unique_lock<std::mutex>& lock) {
    while (!requests[mine]) {
      const std::vector<CURL*> adding = std::exchange(to_add, {});
      lock.unlock();
      for (CURL* easy : adding) curl_multi_add_handle(multi, easy);
      int running = 0;
      const bool performed = curl_multi_perform(multi, &running) == CURLM_OK;
      std::vector<std::pair<CURL*, CURLcode>> finished;
      int left = 0;
      while (CURLMsg* message = curl_multi_info_read(multi, &left)) {
        if (message->msg == CURLMSG_DONE) {
          finished.emplace_back(message->easy_handle, message->data.result);
        }
      }
      for (const auto& done : finished) curl_multi_remove_handle(multi, done.first);
      if (performed && finished.empty()) {
        curl_multi_poll(multi, nullptr, 0, kPollMilliseconds, nullptr);
      }
      lock.lock();
      for (const auto& [easy, code] : finished) requests[easy] = code;
      if (!performed) fail_everything_locked();
      if (!finished.empty() || !performed) changed.notify_all();
    }
  }

  // The multi handle itself failed (out of memory): every request in it ends.
  void fail_everything_locked() {
    for (auto& [easy, result] : requests) {
      if (result) continue;
      curl_multi_remove_handle(multi, easy);
      result = CURLE_FAILED_INIT;
    }
    to_add.clear();
  }
};

HttpSession::HttpSession() : shared_(std::make_unique<Shared>()) {}

HttpSession::~HttpSession() = default;

HttpConnection::HttpConnection(const HubSettings& settings, HttpSession* session)
    : settings_(settings), session_(session), handles_(std::make_unique<Handles>()) {
  initialise_libcurl_once();
  handles_->easy = curl_easy_init();
  if (!handles_->easy) throw std::bad_alloc();
  if (!session_) {
    handles_->multi = curl_multi_init();
    if (!handles_->multi) throw std::bad_alloc();
  }
  set_fixed_options();
}

HttpConnection::~HttpConnection() = default;

// What every request of this connection shares. Set once: curl_easy_reset between requests
// would also drop libcurl's receive buffer, and reallocating it per request scatters freed
// blocks over the allocator's per-thread arenas (peak RSS grew by tens of MiB with 32
// connections).
void HttpConnection::set_fixed_options() {
  Handles& h = *handles_;
  CURL* easy = h.easy;
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, h.error);
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);  // HubClient follows, keeping §5's rules
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::chrono::milliseconds(settings_.connect_timeout).count()));
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!settings_.ca_bundle.empty()) {
    curl_easy_setopt(easy, CURLOPT_CAINFO, settings_.ca_bundle.c_str());
    curl_easy_setopt(easy, CURLOPT_PROXY_CAINFO, settings_.ca_bundle.c_str());
  }
  // Explicit, so libcurl never reads the environment itself (it ignores HTTP_PROXY); the
  // proxy itself is chosen per request, by the URL's scheme.
  curl_easy_setopt(easy, CURLOPT_NOPROXY, settings_.proxies.no_proxy.c_str());
  curl_easy_setopt(easy, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // the proxy's CONNECT answer
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Handles::on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &h);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Handles::on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &h);
  curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &Handles::on_progress);
  curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &h);
  // In a session: wait for a connection in progress to the same origin to say whether it
  // multiplexes (HTTP/2) rather than open another one at once.
  if (session_) curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
}

CappedAnswer HttpConnection::perform_capped(HttpRequest request, std::size_t max_bytes,
                                            const std::stop_token& stop) {
  CappedAnswer answer;
  int status = 0;
  request.on_head = [&](const HttpResponseHead& head) {
    status = head.status;
    return true;
  };
  request.on_body = [&](const char* data, std::size_t length) {
    // An error's body is read to its end (the connection stays usable) but not kept.
    if (status != 200) return true;
    if (answer.body.size() + length > max_bytes) {
      answer.too_large = true;
      return false;
    }
    answer.body.append(data, length);
    return true;
  };
  answer.result = perform(request, stop);
  return answer;
}

HttpResult HttpConnection::perform(const HttpRequest& request, const std::stop_token& stop) {
  Handles& h = *handles_;
  CURL* easy = h.easy;
  h.begin(request, stop);

  const std::string url = request.url.origin() + request.url.target;
  HeaderList headers;
  for (const auto& [name, value] : request.headers) headers.add(name + ": " + value);
  const std::string proxy = settings_.proxies.for_scheme(request.url.scheme);

  // Every option a request may change is set on every request.
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.list);
  curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, request.receive_buffer);
  curl_easy_setopt(easy, CURLOPT_PROXY, proxy.c_str());
  // Listings only: whatever this libcurl can inflate. Never for file bytes.
  curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, request.accept_compressed ? "" : nullptr);
  curl_easy_setopt(easy, CURLOPT_HTTP_CONTENT_DECODING, request.accept_compressed ? 1L : 0L);
  if (request.head) {
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);  // also undoes a previous NOBODY
  }

  HttpResult result;
  if (stop.stop_requested()) {
    result.outcome = HttpOutcome::cancelled;
    return result;
  }
  const CURLcode code = session_ ? session_->shared_->run(easy, stop) : h.run_alone(stop);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);  // the list dies with this call
  if (h.callback_error) std::rethrow_exception(h.callback_error);

  if (code != CURLE_OK && stop.stop_requested()) h.cancelled = true;
  result.head = std::move(h.head);
  if (!h.head_delivered) result.head.status = 0;
  if (h.cancelled) {
    result.outcome = HttpOutcome::cancelled;
  } else if (h.stalled) {
    result.outcome = HttpOutcome::stalled;
  } else if (h.aborted) {
    result.outcome = HttpOutcome::aborted;
  } else if (code == CURLE_OK) {
    result.outcome = HttpOutcome::complete;
  } else {
    result.outcome = HttpOutcome::failed;
    const std::string text = h.error[0] ? std::string(h.error) : curl_easy_strerror(code);
    result.error = narration::sanitize(settings_.proxies.redact(text), kMaxErrorText);
  }
  return result;
}

}  // namespace rbee::provisioner
