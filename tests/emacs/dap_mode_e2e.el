;;; dap_mode_e2e.el --- drive Emacs dap-mode in batch mode through a debug session -*- lexical-binding: t -*-
;;
;; Run by tests/emacs/runner.py, which sets:
;;   DAP_HOST DAP_PORT   where the debug server (or a tap in front of it) listens
;;   DAP_TARGET          the debuggee script (tests/targets/scenario.py); lines come from its MARK-* comments
;;   DAP_RESULT          JSON file written at the end: {"ok", "error", "checks": [{"name", "ok", "detail"}]}
;;   DAP_HOME            a fresh directory for all of Emacs's state
;;   DAP_STEP_TIMEOUT_S  how long to wait for each step (default 20)
;;
;; Only dap-mode's own user commands are used: dap-breakpoint-add / -condition /
;; -log-message (their minibuffer prompts are answered by stubbing read-string),
;; dap-debug with the dap-python provider's "attach" + :connect, dap-continue, dap-next,
;; dap-step-in, the dap-ui REPL, the dap-ui Locals view and dap-disconnect.

(require 'package)
(require 'cl-lib)
(require 'json)

(defvar e2e-home (file-name-as-directory (getenv "DAP_HOME")))
(setq user-emacs-directory e2e-home
      package-user-dir (expand-file-name "elpa" e2e-home))
;; Debian installs elpa-* packages here; with -Q package.el does not look there.
(add-to-list 'package-directory-list "/usr/share/emacs/site-lisp/elpa")
(package-initialize)

(defvar e2e-host (getenv "DAP_HOST"))
(defvar e2e-port (string-to-number (getenv "DAP_PORT")))
(defvar e2e-target (getenv "DAP_TARGET"))
(defvar e2e-result (getenv "DAP_RESULT"))
(defvar e2e-timeout (string-to-number (or (getenv "DAP_STEP_TIMEOUT_S") "20")))
(defvar e2e-checks nil)
(defvar e2e-ok t)
(defvar e2e-error nil)
(defvar e2e-stops 0)

;; dap-mode restores breakpoints saved by an earlier run from this file; a fresh
;; DAP_HOME keeps stale ones (with stale line numbers) out of the session.
(setq dap-breakpoints-file (expand-file-name "dap-breakpoints" e2e-home)
      lsp-session-file (expand-file-name "lsp-session" e2e-home)
      dap-print-io nil)

;; Debian bookworm's lsp-treemacs 0.4 reads `treemacs-text-scale', which its treemacs 2.8
;; does not define: without this every dap-ui tree view (Locals) fails with void-variable.
(defvar treemacs-text-scale nil)
(require 'dap-mode)
(require 'dap-ui)
(require 'dap-python)
(setq dap-python-debugger 'debugpy)

(defun e2e-check (name ok &optional detail)
  (unless ok (setq e2e-ok nil))
  (push (list name (and ok t) (format "%S" detail)) e2e-checks)
  (message "[e2e] %s %s %S" (if ok "ok  " "FAIL") name detail))

(defun e2e-wait (what predicate)
  "Pump process output until PREDICATE holds; batch Emacs has no idle loop to do it."
  (let ((deadline (+ (float-time) e2e-timeout)))
    (while (and (not (funcall predicate)) (< (float-time) deadline))
      (accept-process-output nil 0.02))
    (unless (funcall predicate) (error "Timed out after %ss waiting for: %s" e2e-timeout what))))

(defun e2e-line-of (marker)
  "The line of the comment `# MARKER' in the target (the name must not go on with `-')."
  (with-current-buffer (find-file-noselect e2e-target)
    (save-excursion
      (goto-char (point-min))
      (re-search-forward (concat "# " (regexp-quote marker) "\\($\\|[^-[:alnum:]_]\\)"))
      (line-number-at-pos (match-beginning 0)))))

(defun e2e-session () (dap--cur-session))

(defun e2e-frame () (-some-> (e2e-session) dap--debug-session-active-frame))

(add-hook 'dap-stack-frame-changed-hook
          (lambda (_session) (when (e2e-frame) (setq e2e-stops (1+ e2e-stops)))))

(defun e2e-wait-stop (count line)
  (e2e-wait (format "stop %d at line %d" count line)
            (lambda () (and (>= e2e-stops count)
                            (e2e-frame)
                            (equal (gethash "line" (e2e-frame)) line)))))

(defun e2e-locals-text ()
  "Render dap-ui's Locals view as its idle timer would, and return the text.
The buffer is made anew each time: re-rendering an lsp-treemacs buffer fails in batch
mode (lsp-treemacs--expand: integer-or-marker-p nil)."
  (when (get-buffer dap-ui--locals-buffer) (kill-buffer dap-ui--locals-buffer))
  (dap-ui-locals)
  (dap-ui-locals--refresh)
  (with-current-buffer dap-ui--locals-buffer
    (buffer-substring-no-properties (point-min) (point-max))))

(defun e2e-repl-eval (expression expected)
  "Type EXPRESSION into the dap-ui REPL and wait for a line that is exactly EXPECTED."
  (dap-ui-repl)
  (with-current-buffer dap-ui--repl-buffer
    (goto-char (point-max))
    (insert expression)
    (comint-send-input)
    (e2e-wait (format "REPL answer %s to %s" expected expression)
              (lambda ()
                (with-current-buffer dap-ui--repl-buffer
                  (save-excursion
                    (goto-char (point-min))
                    (re-search-forward (concat "^" (regexp-quote expected) "$") nil t)))))
    (e2e-check (format "REPL: %s -> %s" expression expected) t)))

(defun e2e-output-text ()
  (let ((buffer (-some-> (e2e-session) dap--debug-session-output-buffer)))
    (if (buffer-live-p buffer) (with-current-buffer buffer (buffer-string)) "")))

(defun e2e-main ()
  (let ((logpoint-line (e2e-line-of "MARK-LOGPOINT"))
        (condition-line (e2e-line-of "MARK-COND"))
        (plain-line (e2e-line-of "MARK-PLAIN"))
        (call-line (e2e-line-of "MARK-STEPIN"))
        (callee-line (e2e-line-of "MARK-ADD-BODY")))
    ;; Breakpoints, set the way a user sets them: point on the line, then the command.
    (find-file e2e-target)
    (dap-mode 1)
    (dap-ui-mode 1)
    (cl-flet ((add-breakpoint (line &optional command answer)
                (goto-char (point-min))
                (forward-line (1- line))
                (dap-breakpoint-add)
                (when command
                  (cl-letf (((symbol-function 'read-string) (lambda (&rest _) answer)))
                    (call-interactively command)))))
      (add-breakpoint logpoint-line #'dap-breakpoint-log-message "LOG i={i} total={total}")
      (add-breakpoint condition-line #'dap-breakpoint-condition "i == 3")
      (add-breakpoint plain-line))

    ;; The attach configuration a dap-mode user writes for debugpy, unchanged.
    (dap-debug (list :type "python" :request "attach" :name "fastattach e2e"
                     :connect (list :host e2e-host :port e2e-port)
                     :justMyCode t))

    (e2e-wait-stop 1 condition-line)
    (let ((breakpoints (-some->> (e2e-session) dap--debug-session-breakpoints (gethash e2e-target))))
      (e2e-check "setBreakpoints: 3 verified"
                 (and (= (length breakpoints) 3) (--all? (gethash "verified" it) breakpoints))
                 (--map (list (gethash "line" it) (gethash "verified" it)) breakpoints)))
    (e2e-check "stop 1 at the conditional breakpoint, point on its line"
               (and (equal (buffer-file-name) e2e-target) (= (line-number-at-pos) condition-line))
               (list (buffer-file-name) (line-number-at-pos)))
    (let ((locals (e2e-locals-text)))
      (e2e-check "Locals shows i: 3 and total: 6"
                 (and (string-match-p "i: 3" locals) (string-match-p "total: 6" locals))
                 locals))
    (e2e-repl-eval "total * 10" "60")

    (call-interactively #'dap-continue)
    (e2e-wait-stop 2 plain-line)
    (e2e-check "continue -> stop 2 at the plain breakpoint" t)
    (let ((output (e2e-output-text)))
      (e2e-check "logpoint printed 5 times and never stopped"
                 (equal (cl-remove-if-not (lambda (l) (string-prefix-p "LOG i=" l)) (split-string output "\n"))
                        '("LOG i=0 total=0" "LOG i=1 total=0" "LOG i=2 total=1" "LOG i=3 total=3" "LOG i=4 total=6"))
                 output))

    (call-interactively #'dap-next)
    (e2e-wait-stop 3 call-line)
    (e2e-check "dap-next -> the next line" t)

    (call-interactively #'dap-step-in)
    (e2e-wait-stop 4 callee-line)
    (let ((locals (e2e-locals-text)))
      (e2e-check "dap-step-in -> add() with a: 20, b: 1"
                 (and (equal (gethash "name" (e2e-frame)) "add")
                      (string-match-p "a: 20" locals) (string-match-p "b: 1" locals))
                 (list (gethash "name" (e2e-frame)) locals)))
    (e2e-repl-eval "a + b" "21")

    (let ((session (e2e-session)))
      (call-interactively #'dap-disconnect)
      (e2e-wait "the session to end" (lambda () (not (dap--session-running session))))
      (e2e-check "dap-disconnect ends the session" t))))

(defun e2e-finish ()
  (with-temp-file e2e-result
    (insert (json-encode
             `((client . "emacs dap-mode")
               (emacs . ,emacs-version)
               (dap_mode . ,(or (-some-> (assq 'dap-mode package-alist) cadr package-desc-version
                                         package-version-join)
                                "?"))
               (ok . ,(if e2e-ok t :json-false))
               (error . ,e2e-error)
               (checks . ,(vconcat (mapcar (lambda (c) `((name . ,(nth 0 c))
                                                          (ok . ,(if (nth 1 c) t :json-false))
                                                          (detail . ,(nth 2 c))))
                                           (reverse e2e-checks))))))))
  (kill-emacs (if e2e-ok 0 1)))

(condition-case err
    (e2e-main)
  (error (setq e2e-ok nil
               e2e-error (error-message-string err))
         (message "[e2e] ERROR %s" e2e-error)))
(e2e-finish)
