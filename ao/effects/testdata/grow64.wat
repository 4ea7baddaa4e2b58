;; grow64: a tiny memory64 process module for the core64 runtime tests.
;;
;; ABI (see ao/effects/core64.py): exports `memory` (i64), `alloc(len) -> ptr`,
;; `handle(msg_ptr, msg_len, env_ptr, env_len) -> ptr`, where ptr points at
;; [u64 LE length][UTF-8 JSON result].
;;
;; Protocol: handle finds the first `"Data":"` in the message JSON (compact
;; JSON, no space after the colon) and reads an op word and up to two unsigned
;; decimal numbers separated by single spaces. Only the op's first letter
;; counts:
;;   grow N         memory.grow by N 64 KiB pages; Output = previous size in
;;                  pages, or Error "grow failed" when memory.grow returns -1
;;   write OFF VAL  store byte VAL at 64-bit offset OFF; Output "ok"
;;   read OFF       Output = the byte at OFF, in decimal
;;   handled        Output = messages handled (a u64 counter kept in memory)
;;   calls          Output = the exported mutable global `calls`
;;   trap OFF VAL   store byte VAL at OFF, then execute `unreachable`
;;   loop OFF VAL   store byte VAL at OFF, then loop forever (fuel exhaustion)
;;   xbad           return a result whose length field runs past memory
;; Every message first bumps the in-memory counter and the `calls` global, so
;; a rolled-back message is visible as an unchanged count.
;;
;; Memory layout (page 0):
;;   0..8      scratch bump pointer for alloc (starts at 4096, reset by handle)
;;   8..16     messages-handled counter
;;   16..24    the pattern `"Data":"`
;;   32..200   result templates and error strings
;;   200..232  itoa buffer
;;   1024..    result: [u64 length][JSON]
;;   4096..    scratch for the host's message and env (alloc)
(module
  (memory $mem (export "memory") i64 1)
  (global $calls (export "calls") (mut i64) (i64.const 0))

  (data (i64.const 0) "\00\10\00\00\00\00\00\00")
  (data (i64.const 16) "\"Data\":\"")
  ;; T1 (54 bytes)
  (data (i64.const 32) "{\"Messages\":[],\"Spawns\":[],\"Assignments\":[],\"Output\":\"")
  ;; T2 (15 bytes)
  (data (i64.const 96) "\",\"Error\":null}")
  ;; T3 (11 bytes)
  (data (i64.const 112) "\",\"Error\":\"")
  ;; T4 (2 bytes)
  (data (i64.const 128) "\"}")
  (data (i64.const 144) "grow failed")
  (data (i64.const 160) "unknown op")
  (data (i64.const 176) "no Data field")
  (data (i64.const 192) "ok")

  (func $alloc (export "alloc") (param $len i64) (result i64)
    (local $p i64)
    (if (i64.gt_u (local.get $len) (i64.const 61440)) (then unreachable))
    (local.set $p (i64.load (i64.const 0)))
    (if (i64.gt_u (i64.add (local.get $p) (local.get $len)) (i64.const 65536))
      (then unreachable))
    (i64.store (i64.const 0)
      (i64.and (i64.add (i64.add (local.get $p) (local.get $len)) (i64.const 7))
               (i64.const -8)))
    (local.get $p))

  ;; Copy n bytes from src to at; return at + n.
  (func $emit (param $at i64) (param $src i64) (param $n i64) (result i64)
    (memory.copy (local.get $at) (local.get $src) (local.get $n))
    (i64.add (local.get $at) (local.get $n)))

  ;; Write v in decimal ending at 232; return the start address (length = 232 - start).
  (func $itoa (param $v i64) (result i64)
    (local $p i64)
    (local.set $p (i64.const 232))
    (loop $digits
      (local.set $p (i64.sub (local.get $p) (i64.const 1)))
      (i64.store8 (local.get $p)
        (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $v) (i64.const 0))))
    (local.get $p))

  ;; Finish the result at 1024 whose JSON ends at $at.
  (func $finish (param $at i64) (result i64)
    (i64.store (i64.const 1024) (i64.sub (local.get $at) (i64.const 1032)))
    (i64.const 1024))

  (func $ok (param $src i64) (param $n i64) (result i64)
    (local $at i64)
    (local.set $at (call $emit (i64.const 1032) (i64.const 32) (i64.const 54)))
    (local.set $at (call $emit (local.get $at) (local.get $src) (local.get $n)))
    (local.set $at (call $emit (local.get $at) (i64.const 96) (i64.const 15)))
    (call $finish (local.get $at)))

  (func $ok_number (param $v i64) (result i64)
    (local $start i64)
    (local.set $start (call $itoa (local.get $v)))
    (call $ok (local.get $start) (i64.sub (i64.const 232) (local.get $start))))

  (func $error (param $src i64) (param $n i64) (result i64)
    (local $at i64)
    (local.set $at (call $emit (i64.const 1032) (i64.const 32) (i64.const 54)))
    (local.set $at (call $emit (local.get $at) (i64.const 112) (i64.const 11)))
    (local.set $at (call $emit (local.get $at) (local.get $src) (local.get $n)))
    (local.set $at (call $emit (local.get $at) (i64.const 128) (i64.const 2)))
    (call $finish (local.get $at)))

  ;; Address just after the first `"Data":"` in [p, p+n), or -1.
  (func $find_data (param $p i64) (param $n i64) (result i64)
    (local $i i64)
    (local $pattern i64)
    (if (i64.lt_u (local.get $n) (i64.const 8)) (then (return (i64.const -1))))
    (local.set $pattern (i64.load (i64.const 16)))
    (loop $scan
      (if (i64.eq (i64.load (i64.add (local.get $p) (local.get $i))) (local.get $pattern))
        (then (return (i64.add (i64.add (local.get $p) (local.get $i)) (i64.const 8)))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $scan (i64.le_u (local.get $i) (i64.sub (local.get $n) (i64.const 8)))))
    (i64.const -1))

  ;; Skip to just after the next space at or after p (stop at a quote); return the new p.
  (func $next_field (param $p i64) (result i64)
    (local $c i32)
    (block $done
      (loop $walk
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.eq (local.get $c) (i32.const 34)))
        (local.set $p (i64.add (local.get $p) (i64.const 1)))
        (br_if $done (i32.eq (local.get $c) (i32.const 32)))
        (br $walk)))
    (local.get $p))

  ;; Parse an unsigned decimal at p (0 if none).
  (func $number (param $p i64) (result i64)
    (local $c i32)
    (local $v i64)
    (block $done
      (loop $digits
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $c) (i32.const 9)))
        (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10))
                               (i64.extend_i32_u (local.get $c))))
        (local.set $p (i64.add (local.get $p) (i64.const 1)))
        (br $digits)))
    (local.get $v))

  (func $handle (export "handle")
        (param $mp i64) (param $ml i64) (param $ep i64) (param $el i64) (result i64)
    (local $d i64) (local $op i32) (local $a i64) (local $b i64) (local $p i64) (local $r i64)
    (i64.store (i64.const 8) (i64.add (i64.load (i64.const 8)) (i64.const 1)))
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    ;; The message stays readable for this call; the next alloc starts afresh.
    (i64.store (i64.const 0) (i64.const 4096))
    (local.set $d (call $find_data (local.get $mp) (local.get $ml)))
    (if (i64.lt_s (local.get $d) (i64.const 0))
      (then (return (call $error (i64.const 176) (i64.const 13)))))
    (local.set $op (i32.load8_u (local.get $d)))
    (local.set $p (call $next_field (local.get $d)))
    (local.set $a (call $number (local.get $p)))
    (local.set $p (call $next_field (local.get $p)))
    (local.set $b (call $number (local.get $p)))
    ;; g: grow
    (if (i32.eq (local.get $op) (i32.const 103))
      (then
        (local.set $r (memory.grow (local.get $a)))
        (if (i64.eq (local.get $r) (i64.const -1))
          (then (return (call $error (i64.const 144) (i64.const 11)))))
        (return (call $ok_number (local.get $r)))))
    ;; w: write
    (if (i32.eq (local.get $op) (i32.const 119))
      (then
        (i64.store8 (local.get $a) (local.get $b))
        (return (call $ok (i64.const 192) (i64.const 2)))))
    ;; r: read
    (if (i32.eq (local.get $op) (i32.const 114))
      (then (return (call $ok_number (i64.load8_u (local.get $a))))))
    ;; h: handled counter
    (if (i32.eq (local.get $op) (i32.const 104))
      (then (return (call $ok_number (i64.load (i64.const 8))))))
    ;; c: calls global
    (if (i32.eq (local.get $op) (i32.const 99))
      (then (return (call $ok_number (global.get $calls)))))
    ;; t: write then trap
    (if (i32.eq (local.get $op) (i32.const 116))
      (then
        (i64.store8 (local.get $a) (local.get $b))
        unreachable))
    ;; l: write then loop forever
    (if (i32.eq (local.get $op) (i32.const 108))
      (then
        (i64.store8 (local.get $a) (local.get $b))
        (loop $forever (br $forever))))
    ;; x: malformed result
    (if (i32.eq (local.get $op) (i32.const 120))
      (then
        (i64.store (i64.const 1024) (i64.const 0x7fffffffffff))
        (return (i64.const 1024))))
    (call $error (i64.const 160) (i64.const 10)))
)
