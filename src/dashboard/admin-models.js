/** Operators: the image models, their capabilities and prices, each editable in its own form. */
import { useEffect, useState } from 'preact/hooks';
import { api } from './api.js';
import { errorNotice, fmtNumber, html, Loading, Notice, usePageTitle } from './components.js';

export function ModelsPage() {
  usePageTitle('Models');
  const [models, setModels] = useState(null);
  const [notice, setNotice] = useState(null);
  useEffect(() => {
    api('admin/models').then(
      (list) => setModels(list.data),
      (err) => setNotice(errorNotice(err)),
    );
  }, []);
  const saved = (model) => setModels((list) => list.map((m) => (m.id === model.id ? model : m)));

  return html`<main id="main">
    <h1 tabindex="-1">Models and prices</h1>
    <p class="lede">
      Prices are quota units per image at the sync price; a batch pays that times the batch ratio. A change applies
      to batches and images priced after it; running batches keep the price they were charged.
    </p>
    <${Notice} notice=${notice} />
    ${
      models === null
        ? html`<${Loading} what="Loading models" />`
        : html`<div class="models">
            ${models.map((m) => html`<${ModelForm} key=${m.id} model=${m} onSaved=${saved} />`)}
          </div>`
    }
  </main>`;
}

const list = (text) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

function formState(m) {
  return {
    enabled: m.enabled,
    vertex_model: m.vertex_model,
    batch_ratio: String(m.pricing.batch_ratio),
    prices: Object.fromEntries(Object.entries(m.pricing.sync).map(([tier, p]) => [tier, String(p)])),
    aspect_ratios: m.capabilities.aspect_ratios.join(', '),
    image_sizes: m.capabilities.image_sizes.join(', '),
    max_prompt_chars: String(m.capabilities.max_prompt_chars),
    max_reference_images: String(m.capabilities.max_reference_images),
  };
}

function ModelForm({ model, onSaved }) {
  const [f, setF] = useState(() => formState(model));
  const [notice, setNotice] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (key) => (e) => {
    const t = e.currentTarget;
    setF((prev) => ({ ...prev, [key]: t.type === 'checkbox' ? t.checked : t.value }));
  };
  const setPrice = (tier) => (e) => {
    const value = e.currentTarget.value;
    setF((prev) => ({ ...prev, prices: { ...prev.prices, [tier]: value } }));
  };
  const id = (name) => `model-${model.id}-${name}`;

  const submit = async (e) => {
    e.preventDefault();
    const prices = {};
    for (const [tier, text] of Object.entries(f.prices)) {
      const n = Number(text);
      if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n <= 0) {
        return setNotice({ kind: 'error', text: `The ${tier} price must be a whole number of quota units > 0.` });
      }
      prices[tier] = n;
    }
    setBusy(true);
    try {
      const updated = await api(`admin/models/${encodeURIComponent(model.id)}`, {
        method: 'PUT',
        body: {
          enabled: f.enabled,
          vertex_model: f.vertex_model.trim(),
          batch_ratio: Number(f.batch_ratio),
          // The sync price is base × multiplier: the form edits the price itself, so the multiplier is 1.
          base_prices: prices,
          price_multiplier: 1,
          aspect_ratios: list(f.aspect_ratios),
          image_sizes: list(f.image_sizes),
          max_prompt_chars: Number(f.max_prompt_chars),
          max_reference_images: Number(f.max_reference_images),
        },
      });
      setF(formState(updated));
      onSaved(updated);
      setNotice({ kind: 'success', text: `Saved ${model.id}.` });
    } catch (err) {
      setNotice(errorNotice(err));
    } finally {
      setBusy(false);
    }
  };

  const ratio = Number(f.batch_ratio);
  return html`<form class="card model" onSubmit=${submit} aria-labelledby=${id('title')} novalidate>
    <div class="section-head">
      <h2 id=${id('title')} class="mono">${model.id}</h2>
      <label class="check" for=${id('enabled')}>
        <input id=${id('enabled')} type="checkbox" checked=${f.enabled} onChange=${set('enabled')} />
        Enabled
      </label>
    </div>
    <fieldset>
      <legend>Prices (quota units per image)</legend>
      <div class="row wrap">
        ${Object.keys(f.prices).map(
          (tier) => html`<div class="field narrow">
            <label for=${id(`price-${tier}`)}>Price ${tier}</label>
            <input
              id=${id(`price-${tier}`)}
              type="number"
              min="1"
              step="1"
              inputmode="numeric"
              value=${f.prices[tier]}
              onInput=${setPrice(tier)}
              aria-describedby=${id(`batch-${tier}`)}
            />
            <span id=${id(`batch-${tier}`)} class="hint">
              batch ${ratio > 0 ? fmtNumber(Math.round(Number(f.prices[tier]) * ratio)) : '—'}
            </span>
          </div>`,
        )}
        <div class="field narrow">
          <label for=${id('ratio')}>Batch ratio</label>
          <input
            id=${id('ratio')}
            type="number"
            min="0.01"
            max="1"
            step="0.01"
            value=${f.batch_ratio}
            onInput=${set('batch_ratio')}
          />
        </div>
      </div>
    </fieldset>
    <fieldset>
      <legend>Capabilities</legend>
      <div class="row wrap">
        <div class="field wide">
          <label for=${id('vertex')}>Vertex model</label>
          <input id=${id('vertex')} class="mono" value=${f.vertex_model} onInput=${set('vertex_model')} />
        </div>
        <div class="field wide">
          <label for=${id('ratios')}>Aspect ratios</label>
          <input id=${id('ratios')} value=${f.aspect_ratios} onInput=${set('aspect_ratios')} />
        </div>
        <div class="field">
          <label for=${id('sizes')}>Image sizes</label>
          <input id=${id('sizes')} value=${f.image_sizes} onInput=${set('image_sizes')} />
        </div>
        <div class="field narrow">
          <label for=${id('prompt')}>Max prompt characters</label>
          <input id=${id('prompt')} type="number" min="1" step="1" value=${f.max_prompt_chars} onInput=${set('max_prompt_chars')} />
        </div>
        <div class="field narrow">
          <label for=${id('refs')}>Max reference images</label>
          <input
            id=${id('refs')}
            type="number"
            min="1"
            max="16"
            step="1"
            value=${f.max_reference_images}
            onInput=${set('max_reference_images')}
          />
        </div>
      </div>
    </fieldset>
    <div class="row">
      <button type="submit" class="primary" disabled=${busy}>Save ${model.id}</button>
      <${Notice} notice=${notice} />
    </div>
  </form>`;
}
