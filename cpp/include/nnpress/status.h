// nnpress/status.h — error reporting for the whole C++ library, in one place.
//
// CONTRACT
//   Every function that reads untrusted bytes returns a Status; it never aborts, never throws for
//   bad data (std::bad_alloc can still escape when memory runs out), and never reads outside the
//   buffer it was given.
//   Status::ok() is true on success. On failure, code() says what kind of problem it is and
//   message() says what and where ("level stream: truncated payload at byte 17 of 16").
//   Programming errors (a null pointer where a buffer is required, a shape that does not match
//   the buffer size) are reported the same way with StatusCode::kInvalidArgument.
//
// SURPRISES
//   - Apps that prefer exceptions call throw_if_error(status) (throws nnpress::Error), or open the
//     runtime's Model with ErrorMode::kThrow / Model::load (runtime.h), whose members then throw.
//   - kCorrupt and kTruncated both mean "the data is bad"; the Python layer maps both to
//     nnpress.FormatError. kLimit means the data is well-formed but larger than the configured
//     resource limits (also a FormatError in Python, with the limit named in the message).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace nnpress {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // bad argument from the caller (shape, range, null buffer)
  kCorrupt = 2,          // data fails a structural check, checksum or termination check
  kTruncated = 3,        // data ends before the structure it describes
  kUnsupported = 4,      // well-formed but uses a feature/version this build does not have
  kLimit = 5,            // exceeds a resource limit (elements, dimensions, bytes)
  kIo = 6,               // file system error
  kNotFound = 7,         // e.g. a tensor name that is not in the file
};

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // True for the codes that mean "the bytes are bad" (kCorrupt, kTruncated, kLimit, kUnsupported).
  bool is_format_error() const {
    return code_ == StatusCode::kCorrupt || code_ == StatusCode::kTruncated || code_ == StatusCode::kLimit ||
           code_ == StatusCode::kUnsupported;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status corrupt(std::string m) { return Status(StatusCode::kCorrupt, std::move(m)); }
inline Status truncated(std::string m) { return Status(StatusCode::kTruncated, std::move(m)); }
inline Status limit_exceeded(std::string m) { return Status(StatusCode::kLimit, std::move(m)); }

// Exception carrying a Status, for callers that prefer exceptions.
class Error : public std::runtime_error {
 public:
  explicit Error(Status s) : std::runtime_error(s.message()), status_(std::move(s)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

inline void throw_if_error(const Status& s) {
  if (!s.ok()) throw Error(s);
}

}  // namespace nnpress
