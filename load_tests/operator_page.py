"""The operator page /ui driven in Debian's headless Chromium through Debian's chromedriver (selenium; nothing
downloaded): the page's controls by their stable ids and what it shows. Used by tests/test_catalog_ui.py and by
load_tests/ui_screenshot.py (docs/ui.png)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 180  # an enrollment embeds each photo with the models, on 2 shared cores


def stop(message: str) -> None:
    """What a wait that timed out does outside pytest (the tests pass pytest.fail)."""
    raise TimeoutError(message)


@contextmanager
def headless_chromium(width: int = 1280, height: int = 2400) -> Iterator:
    """Debian's Chromium, headless, in a throwaway profile, through Debian's chromedriver (never Selenium Manager:
    nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="ui-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


class OperatorPage:
    """The page's controls, by their stable ids, and what it shows."""

    def __init__(self, driver, base_url: str, fail: Callable[[str], object] = stop) -> None:
        self.driver, self.base_url, self.fail = driver, base_url, fail

    def find(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def finds(self, selector: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, condition, message: str, timeout: float = WAIT_S):
        """Waits for `condition`; on a timeout, fails with what the page showed and the browser's console."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout).until(lambda _: condition())
        except TimeoutException:
            self.fail(f"waited {timeout} s for {message}; the page: {self.state()}")
            raise

    def state(self) -> str:
        body = self.driver.execute_script("return document.body ? document.body.innerText : ''")
        console = [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] != "INFO"]
        return f"{self.driver.current_url}\n{body[:3000]}\nconsole: {console}"

    def open(self) -> None:
        self.driver.get(f"{self.base_url}/ui")
        self.wait(lambda: self.text("#catalog-version") != "–" or self.finds("#catalog-status .error"), "catalog info", 60)
        errors = [e.text for e in self.finds("#catalog-status .error")]
        assert not errors, errors

    def text(self, selector: str) -> str:
        return self.find(selector).text.strip()

    def type(self, selector: str, value: str) -> None:
        field = self.find(selector)
        field.clear()
        if value:
            field.send_keys(value)

    def enroll(self, sku: str, label: str, photos: list[Path], admin_key: str) -> None:
        """Fills in the form and waits for the service's answer in #enroll-result."""
        self.type("#admin-key", admin_key)
        self.type("#sku", sku)
        self.type("#label", label)
        self.find("#photos").clear()
        self.find("#photos").send_keys("\n".join(str(path.resolve()) for path in photos))
        self.find("#enroll").click()
        self.wait(lambda: self.finds("#enroll-result .ok, #enroll-result .error"), "the enrollment's answer")

    def product_row(self, sku: str):
        rows = self.finds(f'#products tr[data-sku="{sku}"]')
        return rows[0] if rows else None

    def live_text(self, selector: str) -> str | None:
        """The textContent of what `selector` finds now (None: nothing), read in one step: lists the page redraws
        after each change would leave a found element stale between two steps."""
        return self.driver.execute_script("const n = document.querySelector(arguments[0]); return n && n.textContent",
                                          selector)

    def history(self, version: int, part: str = "") -> str | None:
        """The history row of `version` (its `.change`, `.who`, `.version` cell with `part`), as text."""
        return self.live_text(f'#history tr[data-version="{version}"] {part}'.strip())

    def photo_count(self, sku: str) -> str | None:
        return self.live_text(f'#products tr[data-sku="{sku}"] td.count')

    def product_photos(self) -> int:
        """How many photos the open product panel lists (-1: none open yet)."""
        return int(self.find("#product-panel").get_attribute("data-photos") or -1)

    def confirm(self, selector: str) -> None:
        """Clicks the button and accepts the confirmation the page asks for."""
        self.find(selector).click()
        self.driver.switch_to.alert.accept()

    def thumbnail_width(self, sku: str) -> int:
        row = self.product_row(sku)
        if row is None:
            return 0
        image = row.find_element("css selector", "img.thumb")
        return int(self.driver.execute_script("return arguments[0].complete ? arguments[0].naturalWidth : 0", image))

    def try_photo(self, photo: Path) -> dict:
        """Recognizes `photo` through the page; returns the service's answer as the page received it."""
        self.find("#try-photo").send_keys(str(photo.resolve()))
        self.find("#try").click()
        self.wait(lambda: self.finds("#try-status .ok, #try-status .error"), "the recognition's answer")
        errors = [e.text for e in self.finds("#try-status .error")]
        assert not errors, errors
        self.wait(lambda: self.find("#canvas").get_attribute("data-boxes") is not None, "the boxes drawn", 30)
        return json.loads(self.driver.execute_script("return document.getElementById('try-json').textContent"))

    def shown_products(self) -> list[dict]:
        """Each product listed under the photo; textContent, exactly as inserted (labels may end in a space)."""
        return [{"label_source": item.get_attribute("data-label-source"), "sku": item.get_attribute("data-sku") or None,
                 "name": item.find_element("css selector", ".name").get_attribute("textContent"),
                 "detail": item.find_element("css selector", ".detail").get_attribute("textContent")}
                for item in self.finds("#try-result li.product")]

    def canvas_has_colour(self, rgb: tuple[int, int, int]) -> bool:
        """Whether the canvas holds pixels of exactly this colour (a box's stroke)."""
        return bool(self.driver.execute_script("""
            const [r, g, b] = arguments[0];
            const canvas = document.getElementById('canvas');
            if (!canvas.width) return false;
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 0; i < data.length; i += 4)
              if (data[i] === r && data[i + 1] === g && data[i + 2] === b) return true;
            return false;""", list(rgb)))
