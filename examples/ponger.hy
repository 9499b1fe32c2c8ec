;; A cell written in Hy: it answers (ping N) by calling back (pong N+1), and counts.
;; Hy compiles this file to Python when it is imported; nothing received from the wire is
;; ever run as Hy or Python: the wire carries data, which the cell's evaluator applies.

(import cellframe [Cell Symbol Keyword])
(import cellframe.cell.statemachine [transition])

(defclass Ponger [Cell]
  "Answers every ping with a pong one higher; after the first ping it is 'playing'."
  (setv states #("waiting" "playing")
        initial "waiting"
        role "ponger")

  (defn __init__ [self #* args #** kwargs]
    (.__init__ (super) #* args #** kwargs)
    (setv self.pings 0))

  (defn [(transition "ping" :target "playing")] ping [self n]
    (+= self.pings 1)
    (.cell-reply self [(Symbol "pong") (+ n 1) (Keyword "by") self.cell-name])))
