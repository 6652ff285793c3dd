// Smoothing of a series as TensorBoard does it.

/** TensorBoard's smoothing: an exponential moving average, debiased for its first points. */
export class Ema {
  constructor(weight) {
    this.weight = weight;
    this.last = 0;
    this.count = 0;
  }

  next(value) {
    if (value === null) return null;
    this.last = this.last * this.weight + (1 - this.weight) * value;
    this.count += 1;
    return this.last / (1 - this.weight ** this.count);
  }
}

export function ema(values, weight) {
  const state = new Ema(weight);
  return values.map((value) => state.next(value));
}
